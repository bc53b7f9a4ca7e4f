"""Files deleted since indexing: the searcher reports each vanished file once and tops the results up from the
next live candidates, for text and image queries, reranked or not."""

from __future__ import annotations

import os

import pytest

from bt_search.indexing.run import index_paths
from bt_search.search.searcher import Searcher
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.images import noise_image

QUERY = "a red circle left of a blue square"


@pytest.fixture
def deletable_library(engine, tmp_path):
    """Nine freshly indexed photos per test (the tests delete some): (reader, index dir)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(9):
        noise_image(500 + i, 64, 64 + 2 * i).save(photos / f"p{i}.png")
    with IndexWriter.open(tmp_path / "index", IndexIdentity.of(engine)) as writer:
        index_paths([str(photos)], writer, engine, workers=0, batch_size=4)
    return IndexReader.open(tmp_path / "index"), tmp_path / "index"


def _cosine_order(reader, engine, query_embedding):
    sims, rows = reader.search(query_embedding, 100)
    return reader.paths_for(rows[0])


@pytest.mark.parametrize("rerank", [False, True])
def test_deleted_top_hits_are_replaced_by_the_next_candidates(engine, deletable_library, rerank):
    reader, _ = deletable_library
    order = _cosine_order(reader, engine, engine.encode_texts([QUERY]))
    for path in order[:3]:
        os.remove(path)
    missing = []
    searcher = Searcher(reader, engine, on_missing=lambda path, reason: missing.append(path))
    (hits,) = searcher.search([QUERY], top_k=3, shortlist=3, rerank=rerank)
    assert sorted(h.path for h in hits) == sorted(order[3:6])  # the next three live candidates, reranked or not
    assert sorted(missing) == sorted(order[:3]), "each vanished file is reported exactly once"


def test_results_stop_where_the_index_runs_out(engine, deletable_library):
    reader, _ = deletable_library
    order = _cosine_order(reader, engine, engine.encode_texts([QUERY]))
    for path in order[:7]:
        os.remove(path)
    (hits,) = Searcher(reader, engine).search([QUERY], top_k=5, shortlist=5, rerank=False)
    assert [h.path for h in hits] == order[7:]


def test_an_image_query_tops_up_too(engine, deletable_library, tmp_path):
    reader, _ = deletable_library
    probe = tmp_path / "probe.png"
    noise_image(900, 64, 64).save(probe)
    searcher = Searcher(reader, engine)
    before = [h.path for h in searcher.similar_images(str(probe), top_k=6)]
    for path in before[:2]:
        os.remove(path)
    after = [h.path for h in searcher.similar_images(str(probe), top_k=4)]
    assert after == before[2:6]
