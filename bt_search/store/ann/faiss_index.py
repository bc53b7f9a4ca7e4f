"""Approximate nearest-neighbour indexes sized to a memory budget, maintained incrementally.

Pure FAISS logic (no files of the store): choose an index type for a collection size and memory budget
(`plan_index`), build it from a training sample and streamed chunks (`build_index`), add rows
(`add_vectors`), search with tombstoned rows masked and optional exact re-scoring (`search`), store it
memory-mapped (`write_index` / `read_index`) and tell when it should be rebuilt (`needs_rebuild`).
Vectors are float32 unit vectors and inner product is cosine; FAISS ids are the store's row ids (int64).
Tuning nprobe/efSearch to a recall target lives in `ann_tuning.py`.

The choice follows autofaiss's, for an index that must be memory-mappable (the store opens it per query):
  flat      exact; while a scan of every vector is cheap (<= FLAT_MAX_VECTORS)
  ivf_flat  IVF with full vectors while they fit the budget (exact scores within the probed lists)
  ivf_sq8   IVF with 8-bit scalar-quantized vectors (4x smaller) while those fit; near-exact ranking
  ivf_pq    OPQ rotation + IVF with an HNSW coarse quantizer + PQ codes, past what fits
            (ivf_sq8 and ivf_pq re-score a shortlist of k x refine_factor exactly through
            `exact_vectors`, which restores the recall and the exact scores the codes lose)
  hnsw      only when asked for: its graph is read whole at open (O(N)) and building it is slow
            (225 s for 100k x 512-d on 2 cores), so the budget never picks it
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from bt_search.errors import UsageError
from bt_search.store.files import atomic_write

KINDS = ("flat", "hnsw", "ivf_flat", "ivf_sq8", "ivf_pq")
REFINED_KINDS = ("ivf_sq8", "ivf_pq")  # approximate codes: search re-scores a shortlist exactly
MEMORY_BUDGET_ENV = "BT_SEARCH_MEMORY_BUDGET"
# 1 GiB of index: 1M x 512-d vectors (2 GB) no longer fit, so 1M goes to PQ (136 MB), which keeps an
# incremental add (read + add + atomic rewrite of the file) well under a second.
DEFAULT_MEMORY_BUDGET = 1 << 30

FLAT_MAX_VECTORS = 100_000  # a flat scan of 100k x 512-d (200 MB, memory-mapped) is tens of ms
IVF_LISTS_PER_SQRT_N = 4  # FAISS guideline: 4..16 x sqrt(N) lists
IVF_HNSW_QUANTIZER_MIN_LISTS = 4096  # from here an HNSW graph over the centroids beats a flat scan of them
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
QUANTIZER_HNSW_M = 32
KMEANS_ITERATIONS = 10  # FAISS's 25 more than doubles training time; the tuned nprobe absorbs the rest
TRAIN_POINTS_PER_LIST = 64  # FAISS k-means wants >= 39 per centroid
PQ_TRAIN_MIN = 256 * 64  # PQ's 256 centroids per sub-quantizer want ~64 points each
PQ_MIN_POINTS_PER_CENTROID = 4  # below 256 * 4 rows, PQ gets fewer centroids (bits per code)
PQ_CODE_SIZES = (128, 64, 32, 16, 8)  # bytes per vector, best first
OPQ_ITERATIONS = 8  # FAISS's 50 cost minutes of training for a rotation that has converged by ~10
OPQ_TRAIN_POINTS = 16_384  # a 512 x 512 rotation is well determined by 16k points (FAISS: 65k)
# Sub-quantizers of 4 dims made one OPQ128 iteration on 16k x 512-d take 190 s on one core (OPQ64:
# 13 s); the exact re-scoring of a wider shortlist recovers what coarser codes lose. Small embeddings
# keep at least 8 codes (training is cheap there, and fewer codes rank too coarsely).
PQ_MIN_DIMS_PER_CODE = 8
PQ_MIN_CODES = 8
ID_BYTES = 8  # an IVF list stores each row id as int64


@dataclass(frozen=True)
class IndexPlan:
    """What to build: a FAISS factory string and the numbers behind it."""

    kind: str
    factory: str
    dim: int
    n_vectors: int
    nlist: int = 0  # IVF lists (0: not IVF)
    hnsw_m: int = 0  # graph degree of the HNSW index or of the IVF coarse quantizer
    pq_m: int = 0  # PQ bytes per vector (0: not PQ)
    train_size: int = 0  # vectors to sample for training (0: no training)
    expected_bytes: int = 0  # index size, on disk and when fully resident
    over_budget: bool = False  # even the smallest choice exceeds the budget

    @property
    def needs_training(self) -> bool:
        return self.train_size > 0


@dataclass(frozen=True)
class SearchParams:
    """Per-query knobs; recorded in the manifest next to the recall they measured."""

    nprobe: int = 0  # IVF lists visited (0: not IVF)
    ef_search: int = 0  # HNSW beam width, or the IVF quantizer's when it is an HNSW graph
    refine_factor: int = 1  # PQ: shortlist k * refine_factor, re-scored exactly

    def to_dict(self) -> dict[str, int]:
        return {
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "refine_factor": self.refine_factor,
        }

    @classmethod
    def from_dict(cls, data: dict) -> SearchParams:
        return cls(**{key: int(data[key]) for key in ("nprobe", "ef_search", "refine_factor") if key in data})


def memory_budget_from_env(environ: dict[str, str] | None = None) -> int:
    value = (os.environ if environ is None else environ).get(MEMORY_BUDGET_ENV)
    return DEFAULT_MEMORY_BUDGET if not value else parse_bytes(value)


_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


def parse_bytes(text: str) -> int:
    """'1GiB', '512MB', '2g', '1500000' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise UsageError(f"not a size: {text!r} (use e.g. 512MB, 2GiB)")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise UsageError(f"a memory budget must be positive, not {text!r}")
    return size


def plan_index(
    n_vectors: int,
    dim: int,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    *,
    kind: str | None = None,
) -> IndexPlan:
    """The index for `n_vectors` x `dim` within `memory_budget_bytes`; `kind` forces a type."""
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown index type {kind!r}; expected one of {', '.join(KINDS)}")
    flat_bytes = n_vectors * (4 * dim + ID_BYTES)
    if kind is None:
        if n_vectors <= FLAT_MAX_VECTORS:
            kind = "flat"
        elif flat_bytes <= memory_budget_bytes:
            kind = "ivf_flat"
        elif n_vectors * (dim + ID_BYTES) <= memory_budget_bytes:
            kind = "ivf_sq8"
        else:
            kind = "ivf_pq"
    if kind == "flat":
        return IndexPlan(
            "flat",
            "IDMap,Flat",
            dim,
            n_vectors,
            expected_bytes=flat_bytes,
            over_budget=flat_bytes > memory_budget_bytes,
        )
    if kind == "hnsw":
        size = flat_bytes + n_vectors * HNSW_M * 2 * 4
        return IndexPlan(
            "hnsw",
            f"IDMap,HNSW{HNSW_M}",
            dim,
            n_vectors,
            hnsw_m=HNSW_M,
            expected_bytes=size,
            over_budget=size > memory_budget_bytes,
        )
    nlist = ivf_list_count(n_vectors)
    quantizer_m = QUANTIZER_HNSW_M if (kind == "ivf_pq" or nlist >= IVF_HNSW_QUANTIZER_MIN_LISTS) else 0
    coarse = f"IVF{nlist}_HNSW{quantizer_m}" if quantizer_m else f"IVF{nlist}"
    centroid_bytes = nlist * 4 * dim
    train_size = min(n_vectors, nlist * TRAIN_POINTS_PER_LIST)
    if kind == "ivf_flat":
        return IndexPlan(
            "ivf_flat",
            f"{coarse},Flat",
            dim,
            n_vectors,
            nlist=nlist,
            hnsw_m=quantizer_m,
            train_size=train_size,
            expected_bytes=flat_bytes + centroid_bytes,
            over_budget=flat_bytes + centroid_bytes > memory_budget_bytes,
        )
    if kind == "ivf_sq8":
        size = n_vectors * (dim + ID_BYTES) + centroid_bytes
        return IndexPlan(
            "ivf_sq8",
            f"{coarse},SQ8",
            dim,
            n_vectors,
            nlist=nlist,
            hnsw_m=quantizer_m,
            train_size=train_size,
            expected_bytes=size,
            over_budget=size > memory_budget_bytes,
        )
    dims_per_code = min(PQ_MIN_DIMS_PER_CODE, max(1, dim // PQ_MIN_CODES))
    code_sizes = [m for m in PQ_CODE_SIZES if dim % m == 0 and dim // m >= dims_per_code] or [1]
    fits = [m for m in code_sizes if n_vectors * (m + ID_BYTES) + centroid_bytes <= memory_budget_bytes]
    pq_m = fits[0] if fits else code_sizes[-1]
    size = n_vectors * (pq_m + ID_BYTES) + centroid_bytes + 4 * dim * dim
    # A few rows (a forced ivf_pq on a small index) cannot train 256 centroids per sub-quantizer or a
    # rotation: fewer centroids, no OPQ. Scores are re-scored exactly anyway.
    bits = min(8, max(1, int(math.log2(max(2, n_vectors // PQ_MIN_POINTS_PER_CENTROID)))))
    codes = f"PQ{pq_m}" if bits == 8 else f"PQ{pq_m}x{bits}"
    rotation = f"OPQ{pq_m}_{dim}," if n_vectors >= PQ_TRAIN_MIN else ""
    return IndexPlan(
        "ivf_pq",
        f"{rotation}{coarse},{codes}",
        dim,
        n_vectors,
        nlist=nlist,
        hnsw_m=quantizer_m,
        pq_m=pq_m,
        train_size=min(n_vectors, max(train_size, PQ_TRAIN_MIN)),
        expected_bytes=size,
        over_budget=not fits,
    )


def ivf_list_count(n_vectors: int) -> int:
    """~4 sqrt(N) lists, a power of two, with enough vectors per list to train k-means."""
    by_size = 2 ** round(math.log2(max(1.0, IVF_LISTS_PER_SQRT_N * math.sqrt(n_vectors))))
    trainable = 2 ** int(math.log2(max(1, n_vectors // TRAIN_POINTS_PER_LIST)))
    return int(min(by_size, trainable))


def build_index(
    plan: IndexPlan,
    training_sample: np.ndarray | None,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
) -> faiss.Index:
    """The index `plan` describes, trained on `training_sample`, filled from `chunks` of (ids, vectors).

    Chunks are added as they come, so memory holds one chunk and the index, never all N vectors.
    """
    index = faiss.index_factory(plan.dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    _set_build_knobs(index)
    if not index.is_trained:
        if training_sample is None or len(training_sample) == 0:
            raise ValueError(f"{plan.kind} needs a training sample")
        index.train(_as_vectors(training_sample, plan.dim))
    for ids, vectors in chunks:
        add_vectors(index, vectors, ids)
    return index


def add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Add rows under their row ids: IVF assigns them with its trained quantizer, HNSW links them in."""
    if len(ids) == 0:
        return
    index.add_with_ids(_as_vectors(vectors, index.d), np.ascontiguousarray(ids, dtype=np.int64))


def remove_vectors(index: faiss.Index, ids: np.ndarray) -> bool:
    """Remove rows `ids` where FAISS can (flat, IVF); False for HNSW, whose graph cannot drop nodes
    (the caller keeps masking them at search)."""
    if index_kind(index) == "hnsw":
        return False
    if len(ids):
        index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
    return True


def index_kind(index: faiss.Index) -> str:
    """Which of KINDS `index` is (as built by `build_index`)."""
    if isinstance(index, faiss.IndexPreTransform):
        return "ivf_pq"
    if isinstance(index, faiss.IndexIVF):
        if isinstance(index, faiss.IndexIVFPQ):
            return "ivf_pq"
        return "ivf_sq8" if isinstance(index, faiss.IndexIVFScalarQuantizer) else "ivf_flat"
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"


def ivf_part(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IndexIVF inside `index` (under an OPQ transform), or None. Downcast to its own class (IndexIVFPQ,
    IndexIVFScalarQuantizer...): extract_index_ivf hands back the base class, on which a PQ's training knobs
    were never found, so every IVF-PQ build trained polysemous codes for minutes and warned on stderr."""
    try:
        return faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:  # not an IVF index
        return None


ExactVectors = Callable[[np.ndarray], np.ndarray]


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    *,
    params: SearchParams = SearchParams(),
    excluded_ids: np.ndarray | None = None,
    exact_vectors: ExactVectors | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) [Q, k], best first; ids -1 and scores -inf where fewer than k rows qualify.

    `excluded_ids` (tombstoned rows) are never returned: FAISS skips them during the search.
    `exact_vectors(ids) -> [len(ids), D]` re-scores a shortlist of k * refine_factor candidates exactly
    (for PQ, whose scores are approximate).
    """
    queries = _as_vectors(queries, index.d)
    refine = exact_vectors is not None and params.refine_factor > 1
    shortlist = k * params.refine_factor if refine else k
    selector = _selector(excluded_ids)
    scores, ids = index.search(queries, shortlist, params=_faiss_params(index, params, selector))
    scores[ids < 0] = -np.inf
    if exact_vectors is not None:
        return rescore_exactly(queries, ids, k, exact_vectors)
    return scores, ids


def rescore_exactly(
    queries: np.ndarray, candidate_ids: np.ndarray, k: int, exact_vectors: ExactVectors
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each query's candidates by exact inner product (one fetch for all queries' candidates)."""
    unique = np.unique(candidate_ids[candidate_ids >= 0])
    vectors = _as_vectors(exact_vectors(unique), queries.shape[1]) if len(unique) else None
    scores = np.full(candidate_ids.shape, -np.inf, dtype=np.float32)
    if vectors is not None:
        rows = np.searchsorted(unique, candidate_ids)
        valid = candidate_ids >= 0
        for q in range(len(queries)):  # Q x k' dot products: cheap next to the fetch
            scores[q, valid[q]] = vectors[rows[q, valid[q]]] @ queries[q]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(candidate_ids, order, axis=1), -1)
    return _pad(top_scores, k, -np.inf), _pad(top_ids, k, -1)


def write_index(index: faiss.Index, path: Path) -> None:
    """Write `index` atomically (temp file, fsync, rename): readers see the old or the new file."""
    atomic_write(Path(path), lambda tmp: faiss.write_index(index, str(tmp)))


def read_index(path: Path, mmap: bool = True) -> faiss.Index:
    """Open the index at `path`; with `mmap` its vectors/codes stay in the file (paged in on demand).

    A memory-mapped index is for searching only: open with mmap=False to add to it.
    Raises FileNotFoundError when missing, RuntimeError (from FAISS) when damaged.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    return faiss.read_index(str(path), flags)


def _set_build_knobs(index: faiss.Index) -> None:
    if isinstance(index, faiss.IndexPreTransform):
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        opq.niter, opq.max_train_points = OPQ_ITERATIONS, OPQ_TRAIN_POINTS
        opq.niter_pq_0 = KMEANS_ITERATIONS  # FAISS's 40 for the first PQ of the rotation's training
    ivf = ivf_part(index)
    if ivf is not None:
        ivf.cp.min_points_per_centroid = 1  # small sets: train anyway rather than warn on stderr
        ivf.cp.niter = KMEANS_ITERATIONS
        if isinstance(ivf, faiss.IndexIVFPQ):
            ivf.do_polysemous_training = False  # only for Hamming-filtered search, which we do not use
            ivf.pq.cp.min_points_per_centroid = 1  # as for the lists: no stderr warning on small sets
            ivf.pq.cp.niter = KMEANS_ITERATIONS
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION


def _faiss_params(index: faiss.Index, params: SearchParams, selector) -> faiss.SearchParameters:
    ivf = ivf_part(index)
    if ivf is not None:
        quantizer_params = None
        if isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
            quantizer_params = faiss.SearchParametersHNSW(efSearch=max(params.ef_search, params.nprobe, 16))
        nprobe = min(ivf.nlist, params.nprobe or 1)
        inner = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe, quantizer_params=quantizer_params)
        inner._keep = (
            selector,
            quantizer_params,
        )  # SWIG holds raw pointers: keep the Python objects alive
        if isinstance(index, faiss.IndexPreTransform):
            outer = faiss.SearchParametersPreTransform(index_params=inner)
            outer._keep = inner
            return outer
        return inner
    if index_kind(index) == "hnsw":
        found = faiss.SearchParametersHNSW(sel=selector, efSearch=max(params.ef_search, 16))
    else:
        found = faiss.SearchParameters(sel=selector)
    found._keep = selector
    return found


def _selector(excluded_ids: np.ndarray | None):
    if excluded_ids is None or len(excluded_ids) == 0:
        return None
    excluded = np.ascontiguousarray(excluded_ids, dtype=np.int64)
    batch = faiss.IDSelectorBatch(excluded)
    selector = faiss.IDSelectorNot(batch)
    selector._keep = batch
    return selector


def _as_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"expected vectors of shape [n, {dim}], got {array.shape}")
    return array


def _pad(array: np.ndarray, k: int, value) -> np.ndarray:
    if array.shape[1] >= k:
        return array
    return np.pad(array, ((0, 0), (0, k - array.shape[1])), constant_values=value)


# When to rebuild instead of adding (each passed only after the collection changed by a constant
# factor, so a row is rewritten O(log N) times over its life):
MAX_TOMBSTONE_SHARE = 0.25  # masked rows still cost scan time and list slots
MAX_GROWTH_SINCE_BUILD = 2.0  # IVF: nlist (~4 sqrt N) and centroids were chosen for the N at training
MAX_IMBALANCE_GROWTH = 1.5  # IVF: lists this much more uneven than at training = the data drifted
MIN_KIND_CHANGE = 1.1  # a different planned kind waits for >= 10% growth or shrinkage (no flip-flop)


@dataclass(frozen=True)
class AnnStats:
    """What `needs_rebuild` looks at; the store keeps the `*_at_build` values in its manifest."""

    kind: str
    n_indexed: int  # vectors in the index, masked ones included
    n_excluded: int  # of those, tombstoned (masked at search)
    n_at_build: int  # vectors when the index was last built (trained)
    planned_kind: str  # plan_index(n_live, ...).kind today
    imbalance: float | None = None  # IVF list imbalance now (list_imbalance)
    imbalance_at_build: float | None = None

    @property
    def n_live(self) -> int:
        return self.n_indexed - self.n_excluded


def needs_rebuild(stats: AnnStats) -> str | None:
    """Why the index should be rebuilt from the live rows now, or None to keep adding to it."""
    if stats.n_indexed and stats.n_excluded / stats.n_indexed > MAX_TOMBSTONE_SHARE:
        return (
            f"{stats.n_excluded / stats.n_indexed:.0%} of indexed rows are removed or replaced "
            f"(limit {MAX_TOMBSTONE_SHARE:.0%})"
        )
    change = stats.n_live / max(1, stats.n_at_build)
    if stats.planned_kind != stats.kind and not (1 / MIN_KIND_CHANGE < change < MIN_KIND_CHANGE):
        return f"{stats.n_live} rows call for {stats.planned_kind}, the index is {stats.kind}"
    if stats.kind.startswith("ivf") and change > MAX_GROWTH_SINCE_BUILD:
        return f"grew {change:.1f}x since the IVF lists were trained (limit {MAX_GROWTH_SINCE_BUILD:g}x)"
    if (
        stats.imbalance
        and stats.imbalance_at_build
        and stats.imbalance > MAX_IMBALANCE_GROWTH * stats.imbalance_at_build
    ):
        return (
            f"IVF lists are {stats.imbalance / stats.imbalance_at_build:.1f}x more uneven than at "
            f"training (limit {MAX_IMBALANCE_GROWTH:g}x): the data drifted"
        )
    return None


def list_imbalance(index: faiss.Index) -> float | None:
    """FAISS's imbalance factor of the IVF lists (1.0 = all equal), or None for a non-IVF index."""
    ivf = ivf_part(index)
    if ivf is None or ivf.ntotal == 0:
        return None
    return float(ivf.invlists.imbalance_factor())
