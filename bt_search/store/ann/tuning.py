"""Search knobs tuned at build time: raise nprobe / efSearch until recall@k against exact search reaches a target.

The store runs `tune_search` after a build, on held-out queries whose exact top-k it knows
(`exact_search` over streamed chunks gives those), and records the params and the measured recall.
Text queries sit away from the image embeddings (the modality gap), which costs ANN recall; `probe_queries`
makes held-out queries shifted out of the collection's cone so the tuned knobs hold for text queries too.
"""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np

from bt_search.store.ann.faiss_index import ExactVectors, SearchParams, index_kind, ivf_part, search

DEFAULT_RECALL_TARGET = (
    0.98  # 0.95 promised for text queries; held-out probe queries run ~0.02 easier (tests/unit/store/test_ann_file.py)
)
HNSW_EF_LADDER = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
# Shortlist k * factor re-scored exactly. PQ64 at 512-d needed more than 16 to pass 0.93 at 1M even
# probing every list; the re-score reads factor * k rows of the memory-mapped exact copy.
PQ_REFINE_LADDER = (1, 2, 4, 8, 16, 32, 64)
MAX_PROBE_SHARE = 1 / 8  # a PQ index probing more lists than this should widen its shortlist instead


def recall_at_k(found_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean share of each query's exact top-k (ignoring -1 padding) that `found_ids` contains."""
    shares = []
    for found, exact in zip(found_ids, exact_ids):
        wanted = exact[exact >= 0]
        if len(wanted):
            shares.append(len(np.intersect1d(found, wanted)) / len(wanted))
    return float(np.mean(shares)) if shares else 1.0


class ExactTopK:
    """Exact inner-product top-k of fixed queries over (ids, vectors) chunks fed one at a time.

    Lets one streaming pass over the collection both fill an index and find the tuning queries' truth.
    """

    def __init__(self, queries: np.ndarray, k: int):
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), k), -1, dtype=np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        scores, rows = faiss.knn(
            self.queries,
            np.ascontiguousarray(vectors, dtype=np.float32),
            min(self.k, len(ids)),
            metric=faiss.METRIC_INNER_PRODUCT,
        )
        found = np.where(rows >= 0, np.asarray(ids, dtype=np.int64)[np.maximum(rows, 0)], -1)
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        merged_scores = np.concatenate([self.scores, scores], axis=1)
        merged_ids = np.concatenate([self.ids, found], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(merged_scores, order, axis=1)
        self.ids = np.take_along_axis(merged_ids, order, axis=1)


def exact_search(
    queries: np.ndarray, chunks: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over streamed (ids, vectors) chunks; memory holds one chunk at a time."""
    top = ExactTopK(queries, k)
    for ids, vectors in chunks:
        top.add(ids, vectors)
    return top.scores, top.ids


def probe_queries(sample: np.ndarray, n: int, rng: np.random.Generator, looseness: float = 1.0) -> np.ndarray:
    """`n` held-out queries harder than the collection's own vectors: moved out of its cone.

    Each is a sample vector minus the sample's mean direction plus isotropic noise of norm `looseness`,
    so it sits off the image manifold the way a text query does, without knowing the true gap vector.
    """
    dim = sample.shape[1]
    anchors = sample[rng.choice(len(sample), size=n, replace=len(sample) < n)]
    mean = sample.mean(axis=0)
    noise = rng.standard_normal((n, dim))
    noise *= looseness / np.linalg.norm(noise, axis=1, keepdims=True)
    queries = anchors - mean + noise
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def tune_search(
    index: faiss.Index,
    held_out_queries: np.ndarray,
    exact_ids: np.ndarray,
    k: int = 50,
    target: float = DEFAULT_RECALL_TARGET,
    *,
    excluded_ids: np.ndarray | None = None,
    exact_vectors: ExactVectors | None = None,
) -> tuple[SearchParams, float]:
    """The cheapest params whose recall@k on `held_out_queries` reaches `target`, and that recall.

    When no setting reaches it, the best one found and its (lower) recall: the caller records both.
    `exact_vectors` (PQ only) lets the search re-score a shortlist exactly, as `search` does.
    """

    def measure(params: SearchParams) -> float:
        found = search(
            index, held_out_queries, k, params=params, excluded_ids=excluded_ids, exact_vectors=exact_vectors
        )[1]
        return recall_at_k(found, exact_ids)

    kind = index_kind(index)
    if kind == "flat":
        return SearchParams(), measure(SearchParams())
    if kind == "hnsw":
        ladder = [SearchParams(ef_search=ef) for ef in HNSW_EF_LADDER if ef >= min(k, HNSW_EF_LADDER[-1])]
        return _first_reaching(ladder, measure, target)
    nlist = ivf_part(index).nlist
    if kind == "ivf_flat" or exact_vectors is None:
        return _lowest_nprobe(nlist, 1, measure, target, nlist)
    for factor in PQ_REFINE_LADDER:  # widen the shortlist before probing a large share of the lists
        found = _lowest_nprobe(nlist, factor, measure, target, max(1, int(nlist * MAX_PROBE_SHARE)))
        if found[1] >= target:
            return found
    return _lowest_nprobe(nlist, PQ_REFINE_LADDER[-1], measure, target, nlist)


def _first_reaching(ladder, measure, target) -> tuple[SearchParams, float]:
    best = (ladder[0], -1.0)
    for params in ladder:
        recall = measure(params)
        if recall >= target:
            return params, recall
        best = max(best, (params, recall), key=lambda pair: pair[1])
    return best


def _lowest_nprobe(nlist: int, factor: int, measure, target: float, limit: int) -> tuple[SearchParams, float]:
    """Double nprobe until the target is met (or `limit`), then bisect back to the smallest that meets it."""

    def at(nprobe: int) -> SearchParams:
        return SearchParams(nprobe=nprobe, refine_factor=factor)

    low, nprobe = 0, 1  # low: largest nprobe known to miss the target
    recall = measure(at(nprobe))
    while recall < target and nprobe < limit:
        low, nprobe = nprobe, min(limit, nprobe * 2)
        recall = measure(at(nprobe))
    if recall < target:
        return at(nprobe), recall
    while nprobe - low > max(1, nprobe // 8):  # bisect to within 1/8: finer steps are noise
        middle = (low + nprobe) // 2
        middle_recall = measure(at(middle))
        if middle_recall >= target:
            nprobe, recall = middle, middle_recall
        else:
            low = middle
    return at(nprobe), recall
