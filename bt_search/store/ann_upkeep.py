"""The ANN file: which FAISS index fits, building it with row ids, keeping it up to date, searching it.

FAISS ids are the rows' row ids (IndexIDMap for flat and HNSW; IVF stores ids itself). The file is
derived data: the parts hold the embeddings, and the manifest says which rows it covers:

- rows with row_id >= `covered_below` are *fresh*: searched exactly from the parts until they are
  folded in (when there are more than FRESH_MAX_ROWS, or whenever the file is cheap to rewrite);
- rows that died after they were added stay in the file, listed in the ANN's dead-id file and
  excluded at search with an IDSelector, until the dead share passes REBUILD_DEAD_SHARE (flat and IVF
  remove them on every fold instead: remove_ids is cheap there);
- a rebuild happens when the index type changes, or past those thresholds, or when an IVF index has
  grown to IVF_RETRAIN_GROWTH times the rows its quantizer was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from .files import atomic_write

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

FRESH_MAX_ROWS = 10_000  # more fresh rows than this: fold them into the ANN file
CHEAP_REWRITE_BYTES = 64 << 20  # an ANN file smaller than this is rewritten on every finish()
REBUILD_DEAD_SHARE = 0.2  # dead rows held by the ANN file, as a share of its rows
IVF_RETRAIN_GROWTH = 4.0  # rows now / rows the IVF quantizer was trained on


def choose_index_type(n_vectors: int) -> str:
    """Exact search while it is fast enough, then a graph index (no training, high recall)."""
    return "flat" if n_vectors <= FLAT_MAX_VECTORS else "hnsw"


def ivf_list_count(n_vectors: int) -> int:
    by_size = round(IVF_LISTS_PER_SQRT_N * math.sqrt(n_vectors))
    return max(1, min(by_size, n_vectors // IVF_MIN_POINTS_PER_LIST))


@dataclass(frozen=True)
class AnnState:
    """What the manifest says about the ANN file, as far as upkeep decisions need it."""

    index_type: str
    rows: int  # vectors in the file, dead ones included
    dead: int  # of those, rows no longer live
    trained_rows: int  # rows an IVF quantizer was trained on (else = rows at build)


def plan_upkeep(state: AnnState | None, wanted_type: str, live: int, fresh: int, dead_now: int, dim: int) -> str:
    """"rebuild", "fold" (add fresh rows, drop dead where cheap) or "keep" the ANN file. Pure."""
    if live == 0:
        return "keep" if state is None else "rebuild"
    if state is None or state.index_type != wanted_type:
        return "rebuild"
    if state.rows and dead_now / state.rows > REBUILD_DEAD_SHARE:
        return "rebuild"
    if wanted_type == "ivf" and live > IVF_RETRAIN_GROWTH * max(state.trained_rows, 1):
        return "rebuild"
    cheap = (state.rows + fresh) * dim * 4 <= CHEAP_REWRITE_BYTES
    if fresh > FRESH_MAX_ROWS or (cheap and (fresh or dead_now > state.dead)):
        return "fold"
    return "keep"


def build_index(embeddings: np.ndarray, ids: np.ndarray, index_type: str) -> faiss.Index:
    """An inner-product index of `index_type` holding `embeddings` [N, D] under `ids`."""
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    n_vectors, dim = vectors.shape
    if index_type == "flat":
        index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    elif index_type == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index = faiss.IndexIDMap(graph)
    elif index_type == "ivf":
        lists = ivf_list_count(n_vectors)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # tiny sets: train anyway instead of warning on stderr
        index.train(vectors)
    else:
        raise ValueError(f"unknown index type {index_type!r}; expected one of {', '.join(INDEX_TYPES)}")
    add_rows(index, vectors, ids)
    return index


def add_rows(index: faiss.Index, embeddings: np.ndarray, ids: np.ndarray) -> None:
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(embeddings, dtype=np.float32), np.ascontiguousarray(ids, np.int64))


def remove_rows(index: faiss.Index, ids: np.ndarray) -> bool:
    """Remove `ids` where the index type allows it cheaply (flat, IVF); False for HNSW (mask instead)."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexHNSW):
        return False
    if len(ids):
        index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, np.int64)))
    return True


def search_index(index: faiss.Index, queries: np.ndarray, k: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids) [Q, k]; ids in `excluded` are never returned; -1 where fewer than k were found."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    selector = None
    if len(excluded):
        batch = faiss.IDSelectorBatch(np.ascontiguousarray(excluded, np.int64))
        selector = faiss.IDSelectorNot(batch)
        selector.keep = batch  # the Python wrapper must outlive the search
    params = _search_parameters(index, k, selector)
    return index.search(queries, k, params=params)


def _search_parameters(index: faiss.Index, k: int, selector) -> faiss.SearchParameters:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(HNSW_EF_SEARCH, 4 * k)
    elif isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = min(inner.nlist, max(IVF_MIN_PROBES, math.ceil(inner.nlist * IVF_PROBE_FRACTION)))
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    params.keep = selector
    return params


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k (positions into `embeddings`) without copying them into an index."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    return faiss.knn(queries, np.ascontiguousarray(embeddings, dtype=np.float32), k, metric=faiss.METRIC_INNER_PRODUCT)


def write_index(index: faiss.Index, target: Path) -> None:
    atomic_write(target, lambda tmp: faiss.write_index(index, tmp))


def read_index(path: Path, mmap: bool) -> faiss.Index:
    """The index at `path`, memory-mapped for searching (mmap) or in memory for updating.

    FileNotFoundError when it is gone (a reader then re-reads the manifest).
    """
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError:  # FAISS reports a missing file this way
        if not path.exists():
            raise FileNotFoundError(path) from None
        raise
