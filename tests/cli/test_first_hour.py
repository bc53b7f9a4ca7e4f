"""Issue 23, items 1-2: a re-index with nothing new loads no model; a cheap mistake fails before the model (and
torch) loads, for `query`, `index` and `eval`. Orderings, not timings: `load_engine` is counted in-process, and
one subprocess runs every mistake with torch and transformers unimportable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bt_search.cli.app import app
from bt_search.engine import loading
from bt_search.errors import ModelMismatchError
from bt_search.indexing.run import index_paths
from bt_search.store import IndexReader, IndexWriter
from bt_search.store.files import acquire_lock, release_lock
from tests.support.checkpoints import SPECS
from tests.support.images import noise_image


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_pngs(folder, count, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        noise_image(seed + i, 64, 64).save(folder / f"p{seed + i:02d}.png")


def build(root, model):
    write_pngs(root / "photos", 4)
    result = cli("index", root / "photos", "--index", root / "index", "--model", model, "-q")
    assert result.exit_code == 0, result.stderr
    (root / "photos" / "captions.csv").write_text("file,caption\np00.png,a red circle\n")
    return root


@pytest.fixture(scope="module")
def built(tiny_checkpoint, tmp_path_factory):
    """Photos and their index for the mistakes, which change neither."""
    return build(tmp_path_factory.mktemp("first-hour"), tiny_checkpoint)


@pytest.fixture
def work(tiny_checkpoint, tmp_path):
    """Photos and their index of one test's own (indexes store absolute paths: a copy would be all new)."""
    return build(tmp_path, tiny_checkpoint)


@pytest.fixture
def loads(monkeypatch):
    """Every `load_engine` call (the one place torch and the model load) as it happens."""
    calls, real = [], loading.load_engine

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_engine", counted)
    return calls


def generation(index) -> int:
    return IndexReader.open(index).manifest["generation"]


# --- item 1: nothing new, no model ----------------------------------------------------------------------------


def test_a_rerun_with_nothing_new_loads_no_model_writes_nothing_and_draws_no_bar(work, loads):
    before = generation(work / "index")
    result = cli("index", work / "photos", "--index", work / "index")
    assert result.exit_code == 0, result.stderr
    assert loads == []
    assert "up to date in " in result.stderr
    assert "0 indexed, 4 unchanged (nothing new to embed); 4 images in" in result.stderr
    assert "indexing" not in result.stderr and "loading model" not in result.stderr and "0/0" not in result.stderr
    assert generation(work / "index") == before


def test_a_new_file_loads_the_model_once_and_indexes_it(work, loads):
    write_pngs(work / "photos", 1, seed=10)
    result = cli("index", work / "photos", "--index", work / "index")
    assert result.exit_code == 0, result.stderr
    assert len(loads) == 1 and "loading model" in result.stderr
    assert "1 indexed, 4 unchanged" in result.stderr
    assert len(IndexReader.open(work / "index")) == 5


def test_prune_with_nothing_new_removes_rows_without_the_model(work, loads):
    (work / "photos" / "p01.png").unlink()
    (work / "photos" / "captions.csv").unlink()
    result = cli("index", work / "photos", "--index", work / "index", "--prune")
    assert result.exit_code == 0, result.stderr
    assert loads == [] and "1 removed" in result.stderr
    assert sorted(os.path.basename(p) for p in IndexReader.open(work / "index").paths) == [
        "p00.png",
        "p02.png",
        "p03.png",
    ]


def test_index_paths_calls_a_loader_only_for_new_files_and_checks_it_before_writing(work, checkpoints):
    """The library: `engine` may be a loader; the engine it gives must fit the index before anything is written."""
    calls = []

    def other_model():  # same shapes, another model: another identity
        calls.append(1)
        return loading.load_engine(str(checkpoints[SPECS[1].name]), device="cpu")

    with IndexWriter.open(work / "index", lambda: pytest.fail("an existing index needs no identity")) as writer:
        report = index_paths([work / "photos"], writer, other_model, workers=0)
    assert calls == [] and report.unchanged == 4 and report.indexed == 0

    write_pngs(work / "photos", 1, seed=20)
    before = generation(work / "index")
    with IndexWriter.open(work / "index", lambda: pytest.fail("unused")) as writer:
        with pytest.raises(ModelMismatchError, match="was built with model"):
            index_paths([work / "photos"], writer, other_model, workers=0)
    assert calls == [1] and generation(work / "index") == before  # not even the scan rules were recorded


# --- item 2: cheap mistakes fail before the model loads -------------------------------------------------------

MISTAKES = [  # (arguments, exit code, words of the message); {w}: the test's folder
    (["query", "cats", "--index", "{w}/indx", "--no-server"], 1, "no index at"),
    (["query", "cats", "--index", "{w}/index", "--sort", "newest", "--no-server"], 2, "--sort must be"),
    (["query", "cats", "--index", "{w}/index", "--after", "yesterday", "--no-server"], 2, "--after takes a date"),
    (["query", "--image", "{w}/gone.png", "--index", "{w}/index", "--no-server"], 2, "--image {w}/gone.png: file not"),
    (["query", "--image", "{w}/photos/captions.csv", "--index", "{w}/index", "--no-server"], 2, "not an image"),
    (["query", "cats", "--index", "{w}/index", "--model", "{w}/modl", "--no-server"], 1, "model directory"),
    (["index", "{w}/photos", "--index", "{w}/index", "--model", "{w}/modl"], 1, "model directory"),
    (["index", "{w}/photos", "--index", "{w}/index", "--model", "{w}/photos"], 1, "was built with model"),
    (["index", "{w}/photoz", "--index", "{w}/index"], 2, "no such file or directory"),
    (["index", "{w}/photos", "--index", "{w}/locked"], 1, "locked by another bt-search index run"),
    (["index", "{w}/photos", "--index", "{w}/new-locked"], 1, "locked by another bt-search index run"),
    (["eval", "{w}/nope.csv", "--index", "{w}/index"], 2, "captions file not found"),
    (["eval", "{w}/photos/captions.csv", "--index", "{w}/indx"], 1, "no index at"),
]


@pytest.fixture(scope="module")
def locked(built):
    """A second `index` run is under way on {w}/locked (a copy of the index) and on {w}/new-locked (new)."""
    shutil.copytree(built / "index", built / "locked")
    (built / "new-locked").mkdir()
    fds = [acquire_lock(built / "locked"), acquire_lock(built / "new-locked")]
    yield built
    for fd in fds:
        release_lock(fd)


def _filled(items, work):
    return [item.replace("{w}", str(work)) for item in items]


@pytest.mark.parametrize("args,code,words", MISTAKES, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else "")
def test_a_cheap_mistake_fails_before_the_model_loads(locked, loads, args, code, words):
    result = cli(*_filled(args, locked))
    assert (result.exit_code, loads) == (code, []), result.output
    assert words.replace("{w}", str(locked)) in result.output
    assert "loading model" not in result.output


CHILD = """
import json, sys
from typer.testing import CliRunner
from bt_search.cli.app import app
results = [CliRunner().invoke(app, args) for args in json.loads(sys.argv[1])]
print(json.dumps([[r.exit_code, r.output, sorted(m for m in ("torch", "transformers") if m in sys.modules)]
                  for r in results]))
"""


def test_every_cheap_mistake_fails_with_torch_and_transformers_unimportable(locked, tmp_path):
    """The same mistakes in one process where `import torch` (or transformers) raises."""
    poison = tmp_path / "poison"
    for name in ("torch", "transformers"):
        (poison / name).mkdir(parents=True)
        (poison / name / "__init__.py").write_text(f"raise ImportError('{name} imported')\n")
    repo = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(poison), repo, os.environ.get("PYTHONPATH", "")]))
    cases = [_filled(args, locked) for args, _, _ in MISTAKES]
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], capture_output=True, text=True, env=env)
    assert child.returncode == 0, child.stderr
    for (args, code, words), (exit_code, output, heavy) in zip(MISTAKES, json.loads(child.stdout), strict=True):
        assert (exit_code, heavy) == (code, []), (args, output)
        assert words.replace("{w}", str(locked)) in output, (args, output)


# --- item 3: a cosine query imports no transformers -----------------------------------------------------------


def test_a_cosine_query_runs_with_transformers_unimportable(built, tmp_path):
    poison = tmp_path / "poison" / "transformers"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('transformers imported')\n")
    repo = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(poison.parent), repo, os.environ.get("PYTHONPATH", "")]))
    args = [
        "query",
        "a red circle",
        "--index",
        built / "index",
        "--no-rerank",
        "-f",
        "paths",
        "--no-server",
        "--no-fold",
    ]
    child = subprocess.run(
        [sys.executable, "-m", "bt_search", *map(str, args)], capture_output=True, text=True, env=env
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == cli(*args).stdout and len(child.stdout.splitlines()) == 4
