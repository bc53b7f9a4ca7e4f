"""FAISS: which index type fits a collection, building it, and searching it (inner product = cosine).

The FAISS index is derived data: the embeddings in images.parquet are the source of truth, and an
exact search over them is always available as the fallback.
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from .index_files import atomic_write

INDEX_TYPES = ("flat", "hnsw", "ivf")
# Largest collection searched exactly: a flat scan of 100k x 512 floats takes a few ms per query.
FLAT_MAX_VECTORS = 100_000

HNSW_NEIGHBOURS = 32  # M: graph degree; 32 keeps recall high on 512-d embeddings
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256  # search is cheap next to the model: buy recall (~0.95 at k=50)
IVF_LISTS_PER_SQRT_N = 4
IVF_MIN_POINTS_PER_LIST = 39  # below this, FAISS's k-means training is ill-posed
IVF_PROBE_FRACTION = 1 / 8  # cosine embeddings cluster loosely; probe generously
IVF_MIN_PROBES = 16


def choose_index_type(n_vectors: int) -> str:
    """Exact search while it is fast enough, then a graph index (no training, high recall)."""
    return "flat" if n_vectors <= FLAT_MAX_VECTORS else "hnsw"


def ivf_list_count(n_vectors: int) -> int:
    by_size = round(IVF_LISTS_PER_SQRT_N * math.sqrt(n_vectors))
    return max(1, min(by_size, n_vectors // IVF_MIN_POINTS_PER_LIST))


def build_faiss_index(embeddings: np.ndarray, index_type: str) -> faiss.Index:
    """An inner-product index of `index_type` ("flat", "hnsw" or "ivf") holding `embeddings` [N, D]."""
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    n_vectors, dim = vectors.shape
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    elif index_type == "ivf":
        lists = ivf_list_count(n_vectors)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # tiny sets: train anyway instead of warning on stderr
        index.train(vectors)
    else:
        raise ValueError(f"unknown index type {index_type!r}; expected one of {', '.join(INDEX_TYPES)}")
    index.add(vectors)
    return index


def search_index(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids) [Q, k] from `index`; ids may hold -1 where an approximate index found < k."""
    _tune_for_k(index, k)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k without copying `embeddings` into an index."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    return faiss.knn(queries, embeddings, k, metric=faiss.METRIC_INNER_PRODUCT)


def _tune_for_k(index: faiss.Index, k: int) -> None:
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, 4 * k)
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = min(index.nlist, max(IVF_MIN_PROBES, math.ceil(index.nlist * IVF_PROBE_FRACTION)))


def write_faiss_index(index: faiss.Index, target: Path) -> None:
    atomic_write(target, lambda tmp: faiss.write_index(index, tmp))


def read_faiss_index(path: Path) -> faiss.Index | None:
    """The index stored at `path`, or None when it is missing or unreadable (it can be rebuilt)."""
    try:
        return faiss.read_index(str(path))
    except RuntimeError:  # FAISS reports a missing or damaged file this way
        return None
