"""A query whose nearest files are all gone (an unplugged drive) reads a bounded number of candidates, says so
in one line naming the folder, and exits with its own status instead of 0."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bt_search.engine.loading import load_engine
from bt_search.search.searcher import MISSING_DEPTH_FACTOR, Searcher
from bt_search.store import ImageRow, IndexIdentity, IndexReader, IndexWriter

GONE = "/media/unplugged-drive/photos"
ROWS = 3000


@pytest.fixture(scope="module")
def gone_index(tmp_path_factory, tiny_checkpoint):
    """An index of ROWS images whose files all lie on a drive that is not mounted."""
    engine = load_engine(str(tiny_checkpoint), device="cpu", precision="fp32")
    vectors = np.random.default_rng(0).normal(size=(ROWS, engine.embedding_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    directory = tmp_path_factory.mktemp("gone") / "index"
    rows = [ImageRow(f"{GONE}/{i:05d}.jpg", 1, 1, f"{i:064x}", 8, 8, vector) for i, vector in enumerate(vectors)]
    with IndexWriter.open(directory, IndexIdentity.of(engine)) as writer:
        writer.commit(rows)
    return directory, engine


def test_the_search_reads_a_bounded_number_of_candidates(gone_index):
    directory, engine = gone_index
    missing = []
    searcher = Searcher(IndexReader.open(directory), engine, on_missing=lambda path, reason: missing.append(path))
    assert searcher.search(["a red circle"], top_k=5, shortlist=8, rerank=False) == [[]]
    assert 8 * MISSING_DEPTH_FACTOR // 2 < len(missing) <= 8 * MISSING_DEPTH_FACTOR < ROWS
    assert len(set(missing)) == len(missing)


def test_the_cli_names_the_folder_once_and_exits_4(gone_index, tiny_checkpoint):
    directory, _ = gone_index
    result = subprocess.run(
        [sys.executable, "-m", "bt_search", "query", "a red circle", "--index", str(directory), "--no-rerank"],
        capture_output=True,
        text=True,
        env=dict(os.environ, COLUMNS="400"),
    )
    assert result.returncode == 4, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 4  # three files named, then one line for the rest
    assert f"all under {GONE}:" in lines[-1] and "--prune" in lines[-1]
