"""Shortlist + rerank against the HF reference and brute force; batches share vision-tower work."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from bt_search.errors import UsageError
from bt_search.indexing.run import index_paths
from bt_search.search.searcher import Searcher, Shortlist, rank_hits
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.images import noise_image
from tests.support.reference import reference_itm

QUERIES = ["a red circle left of a blue square", "two green triangles", "a photo of two cats sleeping on a couch"]


@pytest.fixture(scope="module")
def indexed(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(14):
        noise_image(i + 200, 64 + 3 * i, 64).save(photos / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.png")
    with IndexWriter.open(root / "index", IndexIdentity.of(engine)) as writer:
        index_paths([str(photos)], writer, engine, workers=0, batch_size=5)
    return IndexReader.open(root / "index"), photos


def test_rerank_order_and_scores_equal_the_reference(engine, indexed, tiny_checkpoint):
    reader, _ = indexed
    (hits,) = Searcher(reader, engine).search([QUERIES[0]], top_k=6, shortlist=6, score="itm")
    shortlist_paths = reader.paths_for(reader.search(engine.encode_texts([QUERIES[0]]), 6)[1][0])
    expected = reference_itm(tiny_checkpoint, [Image.open(p).convert("RGB") for p in shortlist_paths], QUERIES[0])
    expected_order = [shortlist_paths[i] for i in np.argsort(-expected, kind="stable")]
    assert [h.path for h in hits] == expected_order
    np.testing.assert_allclose([h.score for h in hits], np.sort(expected)[::-1], atol=1e-4)
    assert sorted(h.shortlist_rank for h in hits) == list(range(1, 7))


def test_no_rerank_equals_brute_force_cosine(engine, indexed):
    reader, _ = indexed
    results = Searcher(reader, engine).search(QUERIES, top_k=5, rerank=False)
    parts = __import__("pyarrow.dataset", fromlist=["x"]).dataset(str(reader.directory / "parts"), format="parquet")
    table = parts.to_table().to_pydict()  # one run into a new index: no tombstones to filter
    embeddings = np.array(table["embedding"], dtype=np.float32)
    for query, hits in zip(QUERIES, results):
        sims = embeddings @ engine.encode_texts([query])[0]
        best = np.argsort(-sims, kind="stable")[:5]
        assert [h.path for h in hits] == [table["path"][i] for i in best]
        np.testing.assert_allclose([h.similarity for h in hits], sims[best], atol=1e-5)
        assert [h.score for h in hits] == [h.similarity for h in hits]


def test_batch_equals_one_at_a_time(engine, indexed):
    reader, _ = indexed
    searcher = Searcher(reader, engine)
    batch = searcher.search(QUERIES, top_k=4, shortlist=8)
    singles = [searcher.search([q], top_k=4, shortlist=8)[0] for q in QUERIES]
    for together, alone in zip(batch, singles):
        assert [h.path for h in together] == [h.path for h in alone]
        np.testing.assert_allclose([h.score for h in together], [h.score for h in alone], atol=1e-5)


def test_vision_tower_runs_once_per_shared_candidate(engine, indexed, monkeypatch):
    reader, _ = indexed
    seen = []
    original = engine.vision_states

    def counting(pixels):
        seen.append(len(pixels))
        return original(pixels)

    monkeypatch.setattr(engine, "vision_states", counting)
    queries = QUERIES * 2  # every candidate is shared by at least two queries
    shortlists = reader.search(engine.encode_texts(queries), 6)[1]
    distinct = len({int(r) for rows in shortlists for r in rows})
    Searcher(reader, engine, batch_size=4).search(queries, top_k=3, shortlist=6)
    assert sum(seen) == distinct < 6 * len(queries)


def test_threshold_and_under(engine, indexed):
    reader, photos = indexed
    searcher = Searcher(reader, engine)
    (all_hits,) = searcher.search([QUERIES[1]], top_k=14, shortlist=14)
    cut = all_hits[4].score
    (kept,) = searcher.search([QUERIES[1]], top_k=14, shortlist=14, threshold=cut)
    assert [h.path for h in kept] == [h.path for h in all_hits[:5]]
    (inside,) = searcher.search([QUERIES[1]], top_k=14, shortlist=14, under=str(photos / "sub"))
    assert inside and all("/sub/" in h.path for h in inside) and len(inside) == 5
    with pytest.raises(UsageError, match="no indexed images"):
        searcher.search([QUERIES[1]], under=str(photos / "nowhere"))


def test_threshold_filters_image_similarity(engine, indexed, tmp_path):
    reader, _ = indexed
    probe = tmp_path / "probe.png"
    noise_image(901, 64, 64).save(probe)
    searcher = Searcher(reader, engine)
    all_hits = searcher.similar_images(str(probe), top_k=9)
    cut = float(np.median([h.similarity for h in all_hits]))
    kept = searcher.similar_images(str(probe), top_k=9, threshold=cut)
    assert kept and len(kept) < len(all_hits)
    assert [h.path for h in kept] == [h.path for h in all_hits if h.score >= cut]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_threshold_is_a_usage_error(engine, indexed, bad):
    reader, _ = indexed
    searcher = Searcher(reader, engine)
    with pytest.raises(UsageError, match="finite"):
        searcher.search([QUERIES[0]], top_k=3, threshold=bad, rerank=False)
    with pytest.raises(UsageError, match="finite"):
        searcher.similar_images(str(reader.paths_for(np.array([0]))[0]), threshold=bad)


def test_moved_file_is_reported_and_the_rest_still_rank(engine, indexed, tmp_path):
    reader, _ = indexed
    (before,) = Searcher(reader, engine).search([QUERIES[2]], top_k=5, shortlist=6)
    victim = before[0].path
    moved = tmp_path / "moved.png"
    import shutil

    shutil.move(victim, moved)
    try:
        reported = []
        (after,) = Searcher(reader, engine, on_missing=lambda p, r: reported.append(p)).search(
            [QUERIES[2]], top_k=5, shortlist=6
        )
    finally:
        shutil.move(moved, victim)
    assert reported == [victim]
    assert victim not in [h.path for h in after] and len(after) == 5


def test_rank_hits_is_pure_and_breaks_ties_by_cosine_then_path():
    shortlist = Shortlist("q", np.array([2, 0, 1]), np.array([0.9, 0.8, 0.8], dtype=np.float32), ["/c", "/b", "/a"])
    hits = rank_hits(shortlist, np.array([0.5, 0.7, 0.7]), top_k=3)
    assert [(h.path, h.rank, h.shortlist_rank) for h in hits] == [("/a", 1, 3), ("/b", 2, 2), ("/c", 3, 1)]
    assert [h.path for h in rank_hits(shortlist, None, top_k=2)] == ["/c", "/a"]


def test_empty_query_is_refused(engine, indexed):
    reader, _ = indexed
    with pytest.raises(UsageError, match="empty query"):
        Searcher(reader, engine).search(["  "])
