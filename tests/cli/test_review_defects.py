"""Issue 11's defects, one test each, through the CLI and the public reader, so they hold whatever the store
looks like inside. Each failed on the code before its fix."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from bt_search.cli.app import app
from bt_search.output.render import render
from bt_search.search.hits import Hit
from bt_search.store import IndexReader
from tests.support.cli import bt_search
from tests.support.images import noise_image


def cli(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def write_pngs(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        noise_image(seed + i, 64, 64).save(folder / name)
    return [folder / name for name in names]


def index(paths, index_dir, model, *extra):
    result = cli("index", *paths, "--index", index_dir, "--model", model, "--workers", "0", *extra)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def indexed_paths(index_dir) -> list[str]:
    return sorted(IndexReader.open(index_dir).paths)


@pytest.fixture(scope="module")
def small_index(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("defects")
    photos = write_pngs(root / "photos", ["a.png", "b.png", "c.png"], seed=40)
    index([root / "photos"], root / "index", tiny_checkpoint, "--quiet")
    return root / "index", photos


def test_item1_unreadable_file_keeps_its_row(tiny_checkpoint, tmp_path):
    ext, lib = tmp_path / "ext", tmp_path / "lib"
    write_pngs(ext, ["a.png", "b.png"])
    write_pngs(lib, ["own.png"], seed=5)
    for name in ("a.png", "b.png"):
        (lib / name).symlink_to(ext / name)
    index([lib], tmp_path / "index", tiny_checkpoint)
    before = indexed_paths(tmp_path / "index")
    assert len(before) == 3

    ext.rename(tmp_path / "ext.unmounted")  # the drive is gone: the links dangle
    unmounted = index([lib], tmp_path / "index", tiny_checkpoint)
    assert indexed_paths(tmp_path / "index") == before
    assert not {row.path for row in IndexReader.open(tmp_path / "index").failed()} & set(before)
    assert "2 indexed file(s) could not be read this run" in unmounted.stderr

    (tmp_path / "ext.unmounted").rename(ext)  # back: nothing is embedded again
    remounted = index([lib], tmp_path / "index", tiny_checkpoint)
    assert "0 indexed, 3 unchanged" in remounted.stderr


def test_item2_prune_keeps_files_under_a_folder_it_could_not_list(tiny_checkpoint, tmp_path, monkeypatch):
    root = tmp_path / "pr"
    write_pngs(root, ["top.png"])
    locked = write_pngs(root / "sub", ["x.png", "y.png"], seed=1)
    deleted = write_pngs(root / "gone", ["z.png"], seed=3)
    index([root], tmp_path / "index", tiny_checkpoint)
    shutil.rmtree(root / "gone")  # a folder that is really gone: its rows go

    real_scandir = os.scandir

    def denied(path="."):  # chmod 000 (tests may run as root, which chmod does not stop)
        if os.path.realpath(path) == os.path.realpath(root / "sub"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    result = index([root], tmp_path / "index", tiny_checkpoint, "--prune")
    assert "1 removed" in result.stderr
    assert indexed_paths(tmp_path / "index") == sorted(str(p) for p in [root / "top.png", *locked])
    assert str(deleted[0]) not in indexed_paths(tmp_path / "index")


def test_item3_prune_survives_indexed_files_turned_scan_problems(tiny_checkpoint, tmp_path):
    photos = write_pngs(tmp_path / "photos", ["a.png", "b.png", "c.png", "d.png"])
    index([tmp_path / "photos"], tmp_path / "index", tiny_checkpoint)
    photos[0].unlink()
    photos[0].symlink_to(tmp_path / "nowhere.png")  # dangling symlink
    photos[1].unlink()
    os.mkfifo(photos[1])  # a FIFO would hang a decoder
    photos[2].unlink()  # really gone
    for _ in range(2):  # "on every re-run"
        result = index([tmp_path / "photos"], tmp_path / "index", tiny_checkpoint, "--prune")
        assert "internal error" not in result.stderr
    assert indexed_paths(tmp_path / "index") == sorted(str(p) for p in [photos[0], photos[1], photos[3]])


def test_item4_huge_sparse_file_is_skipped_with_a_reason(tiny_checkpoint, tmp_path):
    photos = write_pngs(tmp_path / "big", ["a.png", "c.png"])
    huge = tmp_path / "big" / "b.tif"
    with open(huge, "wb") as handle:
        os.truncate(handle.fileno(), 64 << 30)  # 64 GiB, sparse: no disk used
    result = index([tmp_path / "big"], tmp_path / "index", tiny_checkpoint)
    assert indexed_paths(tmp_path / "index") == sorted(str(p) for p in photos)
    failed = {row.path: row.reason for row in IndexReader.open(tmp_path / "index").failed()}
    assert "too large" in failed[str(huge)] and "b.tif" in result.stderr


def test_item6_byte_order_mark_is_not_part_of_the_first_query(small_index, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_bytes("\ufeffa red circle\ntwo green triangles\n".encode("utf-8"))
    result = cli("query", "--queries-file", queries, "--index", small_index[0], "--no-rerank", "-k", "3", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    plain = cli(
        "query",
        "a red circle",
        "two green triangles",
        "--index",
        small_index[0],
        "--no-rerank",
        "-k",
        "3",
        "-f",
        "jsonl",
    )
    assert rows == [json.loads(line) for line in plain.stdout.splitlines()]  # same queries, same scores
    assert {r["query"] for r in rows} == {"a red circle", "two green triangles"}


def test_item7_non_utf8_queries_are_usage_errors(small_index, tmp_path):
    latin1 = "café au lait\n".encode("latin-1")
    (tmp_path / "q.txt").write_bytes(latin1)
    from_file = cli("query", "--queries-file", tmp_path / "q.txt", "--index", small_index[0], "--no-rerank")
    from_stdin = cli("query", "--queries-file", "-", "--index", small_index[0], "--no-rerank", input=latin1)
    # On POSIX, argv bytes that are not UTF-8 arrive as lone surrogates (surrogateescape).
    from_argv = cli(
        "query", latin1.rstrip().decode("utf-8", "surrogateescape"), "--index", small_index[0], "--no-rerank"
    )
    for result in (from_file, from_stdin, from_argv):
        assert result.exit_code == 2, result.stderr
        assert "UTF-8" in result.stderr and "internal error" not in result.stderr


def test_item9_one_file_one_row_whatever_folder_name(small_index, tiny_checkpoint, tmp_path):
    photos_dir = small_index[1][0].parent
    link = tmp_path / "imgslink"
    link.symlink_to(photos_dir)
    copy = tmp_path / "index"
    shutil.copytree(small_index[0], copy)
    index([link], copy, tiny_checkpoint)  # the same folder under another name
    assert indexed_paths(copy) == sorted(str(p) for p in small_index[1])

    index([link, photos_dir], tmp_path / "fresh", tiny_checkpoint)  # one run, both names
    assert indexed_paths(tmp_path / "fresh") == sorted(str(p) for p in small_index[1])

    under = cli("query", "a red circle", "--index", small_index[0], "--under", link, "--no-rerank", "-f", "paths")
    assert under.exit_code == 0, under.stderr
    assert sorted(under.stdout.splitlines()) == sorted(str(p) for p in small_index[1])


def test_item11_damaged_index_is_reported_before_any_model_loads(small_index, tmp_path):
    broken = tmp_path / "index"
    shutil.copytree(small_index[0], broken)
    for path in broken.rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    result = cli("index", small_index[1][0].parent, "--index", broken)  # no --model: the index's own
    assert result.exit_code == 1
    assert str(broken) in result.stderr and "loading model" not in result.stderr


def test_item12_never_suggests_deleting_a_file_given_as_index(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("my notes\n")
    for args in (["query", "cats"], ["index", tmp_path]):
        result = cli(*args, "--index", afile)
        assert result.exit_code == 2, result.stderr
        assert "delete" not in result.stderr and "not an index directory" in result.stderr
    assert afile.read_text() == "my notes\n"


def test_item12_a_folder_with_someone_elses_manifest_is_not_called_damaged(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "manifest.json").write_text('{"name": "my-web-app", "version": "1.0"}\n')
    result = cli("query", "cats", "--index", project)
    assert result.exit_code != 0 and "not a bt-search index" in result.stderr
    assert "delete" not in result.stderr and "rebuild" not in result.stderr
    assert (project / "manifest.json").exists()


def test_item12_a_damaged_index_is_moved_aside_never_deleted(small_index, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(small_index[0], index_dir)
    (index_dir / "manifest.json").write_text("{ not json")
    result = cli("query", "cats", "--index", index_dir)
    assert result.exit_code != 0 and "move" in result.stderr and "aside" in result.stderr
    assert "delete" not in result.stderr


@pytest.mark.parametrize(("code", "says"), [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_item14_disk_full_and_read_only_index_say_what_happened(
    code, says, small_index, tiny_checkpoint, tmp_path, monkeypatch
):
    def fail(src, dst, *args, **kwargs):  # every atomic write ends in a rename
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(os, "replace", fail)
    monkeypatch.setattr(os, "rename", fail)
    result = cli("index", small_index[1][0].parent, "--index", tmp_path / "index", "--model", tiny_checkpoint)
    assert result.exit_code == 1
    assert says in result.stderr and "internal error" not in result.stderr


def test_item14_unknown_format_is_refused_before_the_model_loads(small_index, tmp_path):
    result = cli("query", "cats", "-f", "bogus", "--index", small_index[0], "--model", tmp_path / "no-such-model")
    assert result.exit_code == 2 and "bogus" in result.stderr


def test_item14_quiet_silences_the_long_query_warnings(small_index):
    long_query = " ".join(["word"] * 2000)
    loud = bt_search("query", long_query, "-k", "1", "--index", small_index[0])
    assert loud.returncode == 0, loud.stderr
    assert loud.stderr.count("truncated") == 1 and "Token indices" not in loud.stderr
    quiet = bt_search("query", long_query, "-k", "1", "--index", small_index[0], "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and len(quiet.stdout.splitlines()) == 1


def test_item14_table_keeps_carriage_returns_visible():
    import io

    out = io.StringIO()
    render([Hit("cats", 1, "/photos/cr\rname.jpg", 0.5, 0.25, 1)], "table", out)
    assert "cr\\rname.jpg" in out.getvalue()
