"""Issue 23, items 4-11: the CLI says what is happening. Messages and exit statuses, in-process (CliRunner)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from bt_search import __version__
from tests.support.cli import cli, cli_index
from tests.support.images import write_pngs

# --- item 10: --version and -h ---------------------------------------------------------------------------------


def test_version_and_short_help():
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"bt-search {__version__}\n"
    for args in (["-h"], ["query", "-h"], ["index", "-h"], ["info", "-h"]):
        result = cli(*args)
        assert result.exit_code == 0 and "Usage: " in result.stdout, args


# --- item 11: rich markup in messages is printed as text -------------------------------------------------------


def test_the_missing_extra_message_keeps_its_brackets(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    result = cli("serve", "--index", tmp_path)
    assert result.exit_code == 1
    assert "pip install 'bt-search[serve]'" in result.stderr


def test_paths_with_brackets_survive_errors_and_skip_lines(tiny_checkpoint, tmp_path):
    result = cli("info", "--index", tmp_path / "photos[bold]")
    assert result.exit_code == 1 and "photos[bold]" in result.stderr
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "[red]broken.png").write_bytes(b"not a png")
    result = cli("index", tmp_path / "in", "--index", tmp_path / "idx", "--model", tiny_checkpoint, "--workers", "0")
    assert result.exit_code == 0, result.stderr
    assert "[red]broken.png" in result.stderr and "idx" in result.stderr


# --- item 5: long waits say so; Ctrl-C says what is kept -------------------------------------------------------


@pytest.fixture
def on_terminal(monkeypatch):
    from bt_search.cli import app

    monkeypatch.setattr(app, "_on_terminal", lambda: True)


def test_a_query_says_it_loads_the_model_on_a_terminal_only(small_index, on_terminal, monkeypatch):
    index, _ = small_index
    result = cli("query", "red", "--index", index, "--no-server", "-f", "jsonl")
    assert result.exit_code == 0 and "loading model " in result.stderr
    result = cli("query", "red", "--index", index, "--no-server", "-f", "jsonl", "-q")
    assert result.exit_code == 0 and result.stderr == ""
    monkeypatch.undo()
    result = cli("query", "red", "--index", index, "--no-server", "-f", "jsonl")
    assert result.exit_code == 0 and "loading model" not in result.stderr


def test_eval_says_it_loads_the_model(small_index, on_terminal, tmp_path):
    index, photos = small_index
    captions = tmp_path / "captions.csv"
    captions.write_text(f"file,caption\n{photos[0]},a red circle\n")
    result = cli("eval", captions, "--index", index, "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert "loading model " in result.stderr


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_says_what_is_kept_for_each_command(small_index, tiny_checkpoint, monkeypatch, tmp_path):
    from bt_search.indexing import run
    from bt_search.search import open as search_open

    index, photos = small_index
    monkeypatch.setattr(search_open, "open_searcher", _interrupted)
    monkeypatch.setattr(run, "index_paths", _interrupted)
    captions = tmp_path / "captions.csv"
    captions.write_text(f"file,caption\n{photos[0]},a red circle\n")
    for args in (["query", "red", "--index", index, "--no-server"], ["eval", captions, "--index", index]):
        result = cli(*args)
        assert result.exit_code == 130 and result.stderr.strip() == "interrupted", args
    result = cli("index", photos[0].parent, "--index", tmp_path / "new", "--model", tiny_checkpoint)
    assert result.exit_code == 130 and "finished batches are kept; run the same command to resume" in result.stderr


# --- item 9: a model folder that moved, a mistyped path, the hub's own tool -------------------------------------


def test_a_moved_model_folder_says_that_model_newpath_works(tiny_checkpoint, tmp_path):
    model = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_checkpoint, model)
    write_pngs(tmp_path / "photos", ["a.png", "b.png"], seed=3)
    cli_index([tmp_path / "photos"], tmp_path / "index", model, "-q")
    moved = model.rename(tmp_path / "models" / "moved")
    for args in (
        ["query", "red", "--index", tmp_path / "index", "--no-server"],
        ["index", tmp_path / "photos", "--index", tmp_path / "index"],
    ):
        result = cli(*args)
        assert result.exit_code == 1, args
        assert f"built with the model in {model}, which is no longer there" in result.stderr
        assert "pass its new folder as --model" in result.stderr
    result = cli("query", "red", "--index", tmp_path / "index", "--no-server", "--model", moved, "-f", "jsonl")
    assert result.exit_code == 0, result.stderr


def test_a_mistyped_model_path_is_a_path_not_a_hub_id(tiny_checkpoint, tmp_path, monkeypatch):
    shutil.copytree(tiny_checkpoint, tmp_path / "sample_data" / "demo-model")
    write_pngs(tmp_path / "photos", ["a.png"], seed=5)
    monkeypatch.chdir(tmp_path)
    result = cli("index", "photos", "--index", "idx", "--model", "sample_data/demo-modle")
    assert result.exit_code == 1
    assert "model directory 'sample_data/demo-modle' does not exist (did you mean sample_data/demo-model?)" in (
        result.stderr
    )
    assert not (tmp_path / "idx").exists()


def test_the_offline_hint_names_the_tool_the_install_provides():
    from bt_search.engine.weights import _offline_advice

    advice = _offline_advice("org/name", OSError("offline"))
    assert "`hf download org/name`" in advice and "huggingface-cli" not in advice


# --- item 6: --verbose says which path answered ----------------------------------------------------------------

HIT = {"query": "red", "rank": 1, "path": "/photos/a.png", "score": 0.5, "similarity": 0.4, "shortlist_rank": 1}
KEY = "k" * 64


def test_verbose_names_the_server_that_answered_on_both_paths(tmp_path, runtime, capsys):
    from bt_search.cli.attach import attached_query
    from tests.support.serve import FakeServer, advertise, health_for

    index = tmp_path / "index"
    index.mkdir()

    def respond(method, path, body):
        if path == "/health":
            return 200, {}, health_for(index)
        return 200, {}, {"results": [[HIT]], "missing": []}

    args = ["red", "--index", str(index), "--device", "cpu", "--precision", "fp32", "-f", "jsonl"]
    with FakeServer(respond, KEY) as fake:
        advertise(index, fake.url, KEY)
        result = cli("query", *args, "-v")
        assert result.exit_code == 0 and result.stderr == f"answered by the server at {fake.url}\n"
        assert cli("query", *args).stderr == ""
        assert attached_query([*args, "--verbose"]) == 0
        light = capsys.readouterr()
        assert light.err == f"answered by the server at {fake.url}\n" and light.out == result.stdout


def test_verbose_says_why_the_search_ran_in_process(small_index):
    index, _ = small_index
    result = cli("query", "red", "--index", index, "-f", "jsonl", "-v")
    assert result.exit_code == 0 and f"searching in-process: no server is running for the index {index}" in (
        result.stderr
    )
    result = cli("query", "red", "--index", index, "-f", "jsonl", "-v", "--no-server")
    assert result.exit_code == 0 and "searching in-process: --no-server" in result.stderr
    assert "searching in-process" not in cli("query", "red", "--index", index, "-f", "jsonl", "-v", "-q").stderr


# --- item 7: every suggested command repeats the options that picked the index and model -------------------------


def test_suggested_commands_repeat_the_index_and_model_the_user_gave(small_index, tiny_checkpoint, tmp_path):
    from bt_search.cli.app import _accepts
    from bt_search.cli.flags import with_picks

    picks = {"--index": "my idx", "--model": "m"}
    assert with_picks("run `bt-search failed`, `bt-search index X --index y`", picks, _accepts()) == (
        "run `bt-search failed --index 'my idx'`, `bt-search index X --index y --model m`"
    )
    index, photos = small_index
    broken = tmp_path / "index"
    shutil.copytree(index, broken)
    shutil.copytree(photos[0].parent, tmp_path / "photos")
    (tmp_path / "photos" / "junk.png").write_bytes(b"not an image")
    cli_index([tmp_path / "photos"], broken, tiny_checkpoint, "-q")
    result = cli("info", "--index", broken)
    assert result.exit_code == 0 and f"(list them: bt-search failed --index {broken})" in result.stdout


def test_a_photo_folder_given_as_the_index_is_not_offered_as_one(small_index, tiny_checkpoint):
    _, photos = small_index
    folder = photos[0].parent
    for args in (["query", "red", "--no-server"], ["info"]):
        result = cli(*args, "--index", folder, *(["--model", tiny_checkpoint] if args[0] == "query" else []))
        assert result.exit_code == 1, args
        assert f"{folder} holds images, not a bt-search index" in result.stderr
        assert f"`bt-search index {folder} --index INDEX_DIR" in result.stderr
        assert f"--index {folder}`" not in result.stderr


def test_an_empty_index_suggests_indexing_into_it(tiny_checkpoint, tmp_path):
    write_pngs(tmp_path / "photos", ["a.png"], seed=9)
    cli_index([tmp_path / "photos"], tmp_path / "index", tiny_checkpoint, "-q")
    (tmp_path / "photos" / "a.png").unlink()
    cli_index([tmp_path / "photos"], tmp_path / "index", tiny_checkpoint, "-q", "--prune")
    result = cli("query", "red", "--index", tmp_path / "index", "--no-server")
    assert result.exit_code == 1
    assert f"`bt-search index PATH --index {tmp_path / 'index'}`" in result.stderr


# --- item 8: runs that found nothing say so; files gone since the last run offer --prune ------------------------


def test_an_empty_folder_says_it_found_no_images(tiny_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("index", tmp_path / "empty", "--index", tmp_path / "idx", "--model", tiny_checkpoint)
    assert result.exit_code == 0 and f"found no image files under {tmp_path / 'empty'}" in result.stderr


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads any folder")
def test_an_unreadable_folder_is_an_error_with_its_own_exit_status(tiny_checkpoint, tmp_path):
    locked = tmp_path / "locked"
    write_pngs(locked, ["a.png"])
    locked.chmod(0)
    try:
        result = cli("index", locked, "--index", tmp_path / "idx", "--model", tiny_checkpoint, "-q")
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 5
    assert f"could not read {locked}" in result.stderr and "nothing under it was indexed" in result.stderr


def test_an_unreadable_root_exits_5_even_unprivileged(tiny_checkpoint, tmp_path, monkeypatch):
    from bt_search.media import scan

    write_pngs(tmp_path / "photos", ["a.png"])
    real = scan._sorted_entries

    def refused(directory):
        if directory == str(tmp_path / "photos"):
            raise PermissionError(13, "Permission denied", directory)
        return real(directory)

    monkeypatch.setattr(scan, "_sorted_entries", refused)
    result = cli("index", tmp_path / "photos", "--index", tmp_path / "idx", "--model", tiny_checkpoint)
    assert result.exit_code == 5, result.stderr
    assert f"could not read {tmp_path / 'photos'} (" in result.stderr


def test_files_gone_since_the_last_run_offer_prune_with_the_index(tiny_checkpoint, tmp_path):
    photos = write_pngs(tmp_path / "photos", ["a.png", "b.png", "c.png"], seed=11)
    cli_index([tmp_path / "photos"], tmp_path / "idx", tiny_checkpoint, "-q")
    photos[0].unlink(), photos[1].unlink()
    result = cli("index", tmp_path / "photos", "--index", tmp_path / "idx")
    assert result.exit_code == 0
    assert "2 indexed file(s) are gone from these folders" in result.stderr
    assert f"`bt-search index {tmp_path / 'photos'} --prune --index {tmp_path / 'idx'}` drops them" in result.stderr
    result = cli("index", tmp_path / "photos", "--index", tmp_path / "idx", "--prune")
    assert result.exit_code == 0 and "2 removed" in result.stderr and "are gone" not in result.stderr
