"""Review defects of the query path (issue 11, items 8 and 10): each test fails on the code before the fix."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from bt_search.errors import UsageError
from bt_search.indexing.run import identity_for, index_paths
from bt_search.search.searcher import Searcher
from bt_search.store import IndexReader, IndexWriter
from tests.support.cli import bt_search
from tests.support.images import noise_image

QUERY = "a red circle left of a blue square"


@pytest.fixture
def library(engine, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(9):
        noise_image(500 + i, 64, 64 + 2 * i).save(photos / f"p{i}.png")
    with IndexWriter.open(tmp_path / "index", identity_for(engine)) as writer:
        index_paths([str(photos)], writer, engine, workers=0, batch_size=4)
    return IndexReader.open(tmp_path / "index"), tmp_path / "index"


def _cosine_order(reader, engine, query_embedding):
    sims, rows = reader.search(query_embedding, 100)
    return reader.paths_for(rows[0])


@pytest.mark.parametrize("rerank", [False, True])
def test_item8_deleted_top_hits_are_replaced_by_the_next_candidates(engine, library, rerank):
    reader, _ = library
    order = _cosine_order(reader, engine, engine.encode_texts([QUERY]))
    for path in order[:3]:
        os.remove(path)
    missing = []
    searcher = Searcher(reader, engine, on_missing=lambda path, reason: missing.append(path))
    (hits,) = searcher.search([QUERY], top_k=3, shortlist=3, rerank=rerank)
    assert sorted(h.path for h in hits) == sorted(order[3:6])  # the next three live candidates, reranked or not
    assert sorted(missing) == sorted(order[:3]), "each vanished file is reported exactly once"


def test_item8_results_stop_where_the_index_runs_out(engine, library):
    reader, _ = library
    order = _cosine_order(reader, engine, engine.encode_texts([QUERY]))
    for path in order[:7]:
        os.remove(path)
    (hits,) = Searcher(reader, engine).search([QUERY], top_k=5, shortlist=5, rerank=False)
    assert [h.path for h in hits] == order[7:]


def test_item8_image_query_tops_up_too(engine, library, tmp_path):
    reader, _ = library
    probe = tmp_path / "probe.png"
    noise_image(900, 64, 64).save(probe)
    searcher = Searcher(reader, engine)
    before = [h.path for h in searcher.similar_images(str(probe), top_k=6)]
    for path in before[:2]:
        os.remove(path)
    after = [h.path for h in searcher.similar_images(str(probe), top_k=4)]
    assert after == before[2:6]


def test_item10_threshold_filters_image_similarity(engine, library, tmp_path):
    reader, _ = library
    probe = tmp_path / "probe.png"
    noise_image(901, 64, 64).save(probe)
    searcher = Searcher(reader, engine)
    all_hits = searcher.similar_images(str(probe), top_k=9)
    cut = float(np.median([h.similarity for h in all_hits]))
    kept = searcher.similar_images(str(probe), top_k=9, threshold=cut)
    assert kept and len(kept) < len(all_hits)
    assert [h.path for h in kept] == [h.path for h in all_hits if h.score >= cut]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_item10_non_finite_threshold_is_a_usage_error(engine, library, tmp_path, bad):
    reader, _ = library
    searcher = Searcher(reader, engine)
    with pytest.raises(UsageError, match="finite"):
        searcher.search([QUERY], top_k=3, threshold=bad, rerank=False)
    with pytest.raises(UsageError, match="finite"):
        searcher.similar_images(str(reader.paths_for(np.array([0]))[0]), threshold=bad)


def test_item10_cli_rejects_nan_threshold_with_exit_2(library):
    _, index = library
    result = bt_search("query", QUERY, "--no-rerank", "--threshold", "nan", "--index", index)
    assert result.returncode == 2, result.stderr
    assert "finite" in result.stderr
