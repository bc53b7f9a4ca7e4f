"""bt_search.store.ann.faiss_index / ann_tuning: plans, builds, masked search, incremental adds, tuning, mmap,
rebuild rules."""

from __future__ import annotations

import numpy as np
import pytest

from bt_search.errors import UsageError
from bt_search.store.ann import faiss_index
from bt_search.store.ann.faiss_index import AnnStats, SearchParams
from bt_search.store.ann.tuning import exact_search, probe_queries, recall_at_k, tune_search
from tests.support.ann_data import (
    clustered_image_vectors,
    exact_top_k,
    gap_shifted_queries,
    image_like_queries,
)

DIM = 32  # small so that every kind (OPQ + PQ included) trains in a second or two
N = 6000
GiB = 1 << 30


@pytest.fixture(scope="module")
def collection():
    rng = np.random.default_rng(10)
    vectors = clustered_image_vectors(N, DIM, rng)
    ids = np.arange(N, dtype=np.int64) * 3 + 5  # row ids are not positions
    return vectors, ids


def chunks_of(vectors, ids, size):
    return [(ids[i : i + size], vectors[i : i + size]) for i in range(0, len(ids), size)]


def build(kind, vectors, ids, chunk=1700):
    plan = faiss_index.plan_index(len(ids), vectors.shape[1], kind=kind)
    sample = vectors[np.random.default_rng(1).permutation(len(ids))[: plan.train_size]] if plan.train_size else None
    return faiss_index.build_index(plan, sample, chunks_of(vectors, ids, chunk))


@pytest.fixture(scope="module")
def indexes(collection):
    vectors, ids = collection
    return {kind: build(kind, vectors, ids) for kind in faiss_index.KINDS}


def exact_lookup(vectors, ids):
    position = {int(row): i for i, row in enumerate(ids)}
    return lambda wanted: vectors[[position[int(row)] for row in wanted]]


@pytest.mark.parametrize(
    ("n", "dim", "budget", "kind", "expected_kind", "factory"),
    [
        (5_000, 512, GiB, None, "flat", "IDMap,Flat"),
        (100_000, 512, GiB, None, "flat", "IDMap,Flat"),
        (100_001, 512, GiB, None, "ivf_flat", "IVF1024,Flat"),
        (400_000, 512, GiB, None, "ivf_flat", "IVF2048,Flat"),
        (1_000_000, 512, 4 * GiB, None, "ivf_flat", "IVF4096_HNSW32,Flat"),
        (1_000_000, 512, GiB, None, "ivf_sq8", "IVF4096_HNSW32,SQ8"),
        (2_100_000, 512, GiB, None, "ivf_pq", "OPQ64_512,IVF8192_HNSW32,PQ64"),
        (10_000_000, 512, GiB, None, "ivf_pq", "OPQ64_512,IVF16384_HNSW32,PQ64"),
        (100_000_000, 512, GiB, None, "ivf_pq", "OPQ8_512,IVF32768_HNSW32,PQ8"),
        (1_000, 512, GiB, "ivf_flat", "ivf_flat", "IVF8,Flat"),
        (1_000_000, 512, GiB, "hnsw", "hnsw", "IDMap,HNSW32"),
        (50_000, 512, GiB, "ivf_pq", "ivf_pq", "OPQ64_512,IVF512_HNSW32,PQ64"),
        (300, 16, GiB, "ivf_pq", "ivf_pq", "IVF4_HNSW32,PQ8x6"),  # too few rows for 256 centroids or OPQ
    ],
)
def test_plan_follows_size_and_budget(n, dim, budget, kind, expected_kind, factory):
    plan = faiss_index.plan_index(n, dim, budget, kind=kind)
    assert (plan.kind, plan.factory) == (expected_kind, factory)
    assert plan.over_budget == (plan.expected_bytes > budget)
    if plan.kind.startswith("ivf"):
        assert plan.train_size >= min(n, 39 * plan.nlist)  # FAISS k-means wants >= 39 points per list


def test_plan_expected_bytes_match_a_built_index(indexes, tmp_path):
    for kind in ("flat", "ivf_flat"):
        faiss_index.write_index(indexes[kind], tmp_path / kind)
        size = (tmp_path / kind).stat().st_size
        assert 0.9 < faiss_index.plan_index(N, DIM, kind=kind).expected_bytes / size < 1.1


def test_plan_refuses_unknown_kind():
    with pytest.raises(UsageError):
        faiss_index.plan_index(10, 8, kind="lsh")


def test_memory_budget_parsing():
    assert faiss_index.parse_bytes("2GiB") == 2 * GiB
    assert faiss_index.parse_bytes("512MB") == 512_000_000
    assert faiss_index.parse_bytes("1500") == 1500
    assert faiss_index.memory_budget_from_env({faiss_index.MEMORY_BUDGET_ENV: "3g"}) == 3_000_000_000
    assert faiss_index.memory_budget_from_env({}) == faiss_index.DEFAULT_MEMORY_BUDGET
    with pytest.raises(UsageError):
        faiss_index.parse_bytes("lots")


def test_built_kinds(indexes):
    assert {kind: faiss_index.index_kind(index) for kind, index in indexes.items()} == {k: k for k in faiss_index.KINDS}
    assert all(index.ntotal == N for index in indexes.values())


def test_flat_equals_exact(collection, indexes):
    vectors, ids = collection
    queries = gap_shifted_queries(vectors, 20, np.random.default_rng(2))
    scores, found = faiss_index.search(indexes["flat"], queries, 25)
    np.testing.assert_array_equal(found, exact_top_k(vectors, ids, queries, 25))
    position = {int(row): i for i, row in enumerate(ids)}
    expected = np.array([[vectors[position[int(r)]] @ q for r in row] for q, row in zip(queries, found)])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", faiss_index.KINDS)
def test_excluded_ids_are_never_returned(collection, indexes, kind):
    vectors, ids = collection
    rng = np.random.default_rng(3)
    excluded = rng.choice(ids, size=N // 3, replace=False)
    queries = vectors[np.isin(ids, excluded)][:30]  # each query's own row is excluded
    params = SearchParams(nprobe=16, ef_search=128, refine_factor=4)
    scores, found = faiss_index.search(
        indexes[kind],
        queries,
        40,
        params=params,
        excluded_ids=excluded,
        exact_vectors=exact_lookup(vectors, ids) if kind in faiss_index.REFINED_KINDS else None,
    )
    assert not np.isin(found, excluded).any()
    assert (found >= 0).all() and np.isin(found, ids).all()
    live = ~np.isin(ids, excluded)
    if kind == "flat":  # exact search over the live rows
        np.testing.assert_array_equal(found, exact_top_k(vectors[live], ids[live], queries, 40))
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_search_pads_with_minus_one_when_too_few_rows_qualify(collection, indexes):
    vectors, ids = collection
    excluded = ids[:-5]  # only 5 live rows
    scores, found = faiss_index.search(indexes["flat"], vectors[:3], 8, excluded_ids=excluded)
    assert (found[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert set(found[0, :5]) == set(ids[-5:])


def test_pq_refine_returns_exact_scores_of_its_shortlist(collection, indexes):
    vectors, ids = collection
    queries = gap_shifted_queries(vectors, 10, np.random.default_rng(4))
    lookup = exact_lookup(vectors, ids)
    scores, found = faiss_index.search(
        indexes["ivf_pq"], queries, 10, params=SearchParams(nprobe=8, refine_factor=4), exact_vectors=lookup
    )
    np.testing.assert_allclose(
        scores, np.einsum("qkd,qd->qk", lookup(found.ravel()).reshape(10, 10, DIM), queries), rtol=1e-5, atol=1e-6
    )
    raw_scores, _ = faiss_index.search(indexes["ivf_pq"], queries, 10, params=SearchParams(nprobe=8))
    assert not np.allclose(raw_scores, scores, atol=1e-3)  # PQ scores are approximate: refine changed them


@pytest.mark.parametrize("kind", faiss_index.KINDS)
def test_added_vectors_are_found(collection, kind):
    vectors, ids = collection
    index = build(kind, vectors[:4000], ids[:4000])
    new_vectors = clustered_image_vectors(10, DIM, np.random.default_rng(5))
    new_ids = np.arange(10, dtype=np.int64) + 10**9
    faiss_index.add_vectors(index, new_vectors, new_ids)
    params = SearchParams(nprobe=32, ef_search=64, refine_factor=4)
    lookup = exact_lookup(
        np.concatenate([vectors[:4000], new_vectors]),
        np.concatenate([ids[:4000], new_ids]),
    )
    _, found = faiss_index.search(
        index,
        new_vectors,
        1,
        params=params,
        exact_vectors=lookup if kind in faiss_index.REFINED_KINDS else None,
    )
    np.testing.assert_array_equal(found[:, 0], new_ids)


@pytest.mark.parametrize("kind", ["flat", "ivf_flat"])
def test_streamed_build_equals_one_shot(collection, kind):
    vectors, ids = collection
    queries = image_like_queries(vectors, 20, np.random.default_rng(6))
    params = SearchParams(nprobe=4)
    one_shot = faiss_index.search(build(kind, vectors, ids, chunk=N), queries, 30, params=params)
    streamed = faiss_index.search(build(kind, vectors, ids, chunk=333), queries, 30, params=params)
    np.testing.assert_array_equal(one_shot[1], streamed[1])
    np.testing.assert_allclose(one_shot[0], streamed[0], rtol=1e-6)


@pytest.mark.parametrize("kind", faiss_index.KINDS)
def test_mmap_read_returns_the_same_results(collection, indexes, kind, tmp_path):
    vectors, ids = collection
    path = tmp_path / "index.faiss"
    faiss_index.write_index(indexes[kind], path)
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]  # no temp file left behind
    queries = gap_shifted_queries(vectors, 15, np.random.default_rng(7))
    params = SearchParams(nprobe=8, ef_search=64)
    excluded = ids[::7]
    before = faiss_index.search(indexes[kind], queries, 20, params=params, excluded_ids=excluded)
    for mmap in (True, False):
        after = faiss_index.search(
            faiss_index.read_index(path, mmap=mmap),
            queries,
            20,
            params=params,
            excluded_ids=excluded,
        )
        np.testing.assert_array_equal(before[1], after[1])
        np.testing.assert_allclose(before[0], after[0], rtol=1e-6)


def test_read_index_reports_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        faiss_index.read_index(tmp_path / "nothing.faiss")


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_sq8", "ivf_pq", "hnsw"])
def test_tune_search_reaches_the_target_on_gap_shifted_queries(collection, indexes, kind):
    vectors, ids = collection
    rng = np.random.default_rng(8)
    held_out = gap_shifted_queries(vectors, 60, rng)
    exact = exact_top_k(vectors, ids, held_out, 50)
    lookup = exact_lookup(vectors, ids) if kind in faiss_index.REFINED_KINDS else None
    params, recall = tune_search(indexes[kind], held_out, exact, k=50, target=0.95, exact_vectors=lookup)
    assert recall >= 0.95
    found = faiss_index.search(indexes[kind], held_out, 50, params=params, exact_vectors=lookup)[1]
    assert recall_at_k(found, exact) == pytest.approx(recall)  # the recorded recall is what search gives
    fresh = gap_shifted_queries(vectors, 60, rng)  # queries the tuning never saw
    fresh_found = faiss_index.search(indexes[kind], fresh, 50, params=params, exact_vectors=lookup)[1]
    assert recall_at_k(fresh_found, exact_top_k(vectors, ids, fresh, 50)) >= 0.9
    if kind.startswith("ivf"):  # tuning bought recall by probing more lists than one
        assert params.nprobe > 1
        lower = SearchParams(nprobe=1, refine_factor=params.refine_factor)
        assert (
            recall_at_k(faiss_index.search(indexes[kind], held_out, 50, params=lower, exact_vectors=lookup)[1], exact)
            < 0.95
        )


def test_exact_search_over_chunks_matches_numpy(collection):
    vectors, ids = collection
    queries = probe_queries(vectors, 12, np.random.default_rng(9))
    _, found = exact_search(queries, chunks_of(vectors, ids, 777), 30)
    np.testing.assert_array_equal(found, exact_top_k(vectors, ids, queries, 30))
    assert recall_at_k(found, found) == 1.0


@pytest.mark.parametrize(
    ("stats", "reason_contains"),
    [
        (AnnStats("ivf_flat", 1000, 100, 1000, "ivf_flat", 1.3, 1.2), None),
        (AnnStats("ivf_flat", 1000, 260, 1000, "ivf_flat"), "removed or replaced"),
        (AnnStats("flat", 1000, 250, 1000, "flat"), None),  # exactly at the limit
        (AnnStats("ivf_flat", 2100, 0, 1000, "ivf_flat"), "grew 2.1x"),
        (
            AnnStats("hnsw", 5000, 0, 1000, "hnsw"),
            None,
        ),  # a graph does not degrade as it grows
        (
            AnnStats("flat", 100_500, 0, 100_000, "ivf_flat"),
            None,
        ),  # kind changed, size barely
        (AnnStats("flat", 110_000, 0, 100_000, "ivf_flat"), "call for ivf_flat"),
        (
            AnnStats("ivf_flat", 200_000, 120_000, 200_000, "flat"),
            "removed or replaced",
        ),
        (
            AnnStats("ivf_pq", 1_000_000, 0, 900_000, "ivf_pq", 2.0, 1.2),
            "more uneven",
        ),
        (AnnStats("ivf_pq", 1_000_000, 0, 900_000, "ivf_pq", 1.7, 1.2), None),
    ],
)
def test_needs_rebuild_thresholds(stats, reason_contains):
    reason = faiss_index.needs_rebuild(stats)
    if reason_contains is None:
        assert reason is None
    else:
        assert reason_contains in reason


def test_list_imbalance_of_built_indexes(indexes):
    assert faiss_index.list_imbalance(indexes["flat"]) is None
    imbalance = faiss_index.list_imbalance(indexes["ivf_flat"])
    assert 1.0 <= imbalance < 5.0
