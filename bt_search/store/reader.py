"""A lock-free, consistent reader: one manifest, the files it names pinned, rows read on demand.

open() reads the manifest, memory-maps the parts, tombstones and the ANN file it names (O(parts), no
Parquet scan), and retries from a fresh manifest when a named file vanished meanwhile (a writer
compacted): a reader never mixes one manifest with another's files. Queries read only the rows and
columns they need; search() combines the ANN file (its dead rows excluded by an IDSelector) with an
exact search of the fresh rows the ANN file does not cover yet.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bt_search.errors import IndexFormatError, IndexLockedError, IndexMissingError
from bt_search.media.scan import has_image_extension
from bt_search.store.ann import faiss_index
from bt_search.store.ann.exact_copy import exact_lookup, open_exact_copy
from bt_search.store.ann.policy import search_params
from bt_search.store.files import MANIFEST_FILE, META_COLUMNS, read_manifest, rebuild_hint
from bt_search.store.parts import Snapshot, in_memory_snapshot, open_snapshot
from bt_search.store.records import FailedRow, ImageRow, IndexIdentity, embeddings_matrix, image_rows
from bt_search.store.stored_paths import original_path, original_paths, stored_path, stored_paths
from bt_search.store.v1.reader import load_v1

_OPEN_ATTEMPTS = 20


class _AnnFile:
    """The memory-mapped ANN file with its tuned knobs and, for IVF-SQ8/IVF-PQ, its memory-mapped exact copy."""

    def __init__(self, directory: Path, entry: dict[str, Any]):
        self.index = faiss_index.read_index(directory / entry["file"], mmap=True)
        self.params = search_params(entry, self.index)
        names = entry.get("exact_copy")
        self.exact_vectors = exact_lookup(*open_exact_copy(directory, names)) if names else None

    def search(
        self, queries: np.ndarray, k: int, excluded: np.ndarray, probes: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        params = self.params
        if probes is not None and params.nprobe > probes:
            params = dataclasses.replace(params, nprobe=probes)
        return faiss_index.search(
            self.index, queries, k, params=params, excluded_ids=excluded, exact_vectors=self.exact_vectors
        )


def _read_ann(directory: Path, manifest: dict[str, Any]) -> _AnnFile | None:
    """The ANN file, or None without one, or when it is gone or damaged: the ANN file is derived data,
    and search() is exact without it (slower, never wrong)."""
    entry = manifest.get("ann")
    if not entry:
        return None
    try:
        return _AnnFile(directory, entry)
    except (FileNotFoundError, RuntimeError, ValueError, OSError):
        return None


def _no_index_message(directory: Path) -> str:
    """Why there is no index at `directory`, and what to run. A folder of photos given as the index is the
    common mistake: suggesting to index into it would mix index files with the photos (and be refused)."""
    if _holds_images(directory):
        return (
            f"{directory} holds images, not a bt-search index: `index` names the folder the index lives in. "
            f"Index the photos with `bt-search index {directory} --index INDEX_DIR` (INDEX_DIR a new folder; "
            "without `index`, the default index), then search that"
        )
    return f"no index at {directory}; build one with `bt-search index PATH --index {directory}`"


def _holds_images(directory: Path, look_at: int = 200) -> bool:
    """Whether one of the first `look_at` entries of `directory` is an image file (an error path: bounded)."""
    try:
        with os.scandir(directory) as entries:
            for number, entry in enumerate(entries):
                if number >= look_at:
                    break
                if has_image_extension(entry.name):
                    return True
    except OSError:
        return False
    return False


class IndexReader:
    """A consistent view of an index as of open(); takes no lock, sees every committed batch."""

    def __init__(
        self,
        directory: Path,
        snapshot: Snapshot,
        ann_file: _AnnFile | None,
        manifest_file: tuple[int, int] | None = None,
    ):
        self.directory = directory
        self.manifest = snapshot.manifest
        self.identity = IndexIdentity.from_manifest(self.manifest)
        self._snapshot = snapshot
        self._ann = ann_file
        self._manifest_file = manifest_file  # (st_dev, st_ino) of manifest.json as opened

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> IndexReader:
        directory = Path(directory)
        previous = None
        for _ in range(_OPEN_ATTEMPTS):
            manifest_file = _file_id(directory / MANIFEST_FILE)
            manifest = read_manifest(directory)
            if manifest is None:
                raise IndexMissingError(_no_index_message(directory))
            if manifest["format_version"] == 1:
                snapshot = in_memory_snapshot(directory, manifest, *load_v1(directory, manifest))
                return cls(directory, snapshot, None, manifest_file)
            try:
                snapshot = open_snapshot(directory, manifest)
            except FileNotFoundError as exc:
                if previous == manifest:
                    raise IndexFormatError(f"{exc.filename or exc} is missing; {rebuild_hint(directory)}") from None
                previous = manifest  # a writer replaced a file this manifest names: read the newer manifest
                continue
            index = _read_ann(directory, manifest)
            if index is None and manifest.get("ann") and read_manifest(directory) != manifest:
                previous = manifest  # replaced by a newer ANN file meanwhile
                continue
            return cls(directory, snapshot, index, manifest_file)
        raise IndexLockedError(f"index {directory} is being rewritten by a bt-search index run; try again")

    def __len__(self) -> int:
        return (
            int(self.manifest["counts"]["images"])
            if self.manifest["format_version"] > 1
            else self._snapshot.parts[0].entry["rows"]
        )

    @property
    def generation(self) -> int:
        """Changes whenever a commit or finish changes the index (readers and caches key on it)."""
        return int(self.manifest["generation"])

    @property
    def state_id(self) -> tuple:
        """Equal for two readers only when they see the same committed state of the same index.

        The generation alone is shared by another index (or a copy) swapped in at the same place, so this adds
        the manifest's random `index_id` (absent in older indexes) and the manifest file itself: every commit
        writes a new file, and a copy is another file.
        """
        return (self.manifest.get("index_id"), self.generation, self._manifest_file)

    @property
    def uses_faiss_file(self) -> bool:
        """Whether search() uses the stored ANN file (else an exact scan of the embeddings)."""
        return self._ann is not None

    # --- rows ------------------------------------------------------------------------------------

    def ids(self) -> np.ndarray:
        """Ascending row ids of every live row (O(N) int64s; reads the row_id column only)."""
        return self._snapshot.where(["row_id"]).column("row_id").to_numpy()

    @cached_property
    def paths(self) -> list[str]:
        """The path of every live row, aligned with ids(): O(N) Python strings, for tests and small tools."""
        return original_paths(self._snapshot.where(["path"]).column("path").to_pylist())

    @cached_property
    def embeddings(self) -> np.ndarray:
        """[N, D] float32, aligned with ids(). O(N) memory: prefer embeddings_for()."""
        return embeddings_matrix(self._snapshot.where(["embedding"]).column("embedding"), self.identity.embedding_dim)

    def paths_for(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """The paths of rows `ids`, in that order (reads only the row groups holding them)."""
        return original_paths(self._snapshot.take(np.asarray(ids, dtype=np.int64), ["path"]).column("path").to_pylist())

    def frame_times_for(self, ids: Sequence[int] | np.ndarray) -> list[float | None]:
        """The video frame times (seconds) of rows `ids`, in that order; None for a still image."""
        table = self._snapshot.take(np.asarray(ids, dtype=np.int64), ["frame_time"])
        return table.column("frame_time").to_pylist()

    def embeddings_for(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """[len(ids), D] float32 embeddings of rows `ids`, in that order."""
        table = self._snapshot.take(np.asarray(ids, dtype=np.int64), ["embedding"])
        return np.array(embeddings_matrix(table.column("embedding"), self.identity.embedding_dim))

    def row(self, i: int) -> ImageRow:
        """The row with row id `i`."""
        return image_rows(self._snapshot.take(np.array([i], np.int64), [*META_COLUMNS, "embedding"]))[0]

    def ids_where(self, expression: pc.Expression) -> np.ndarray:
        """Ascending ids of the live rows matching an Arrow expression on the parts' columns.

        Example: `pc.field("camera_make") == "Canon"`; reads only the columns the expression uses.
        """
        return self._snapshot.where(["row_id"], expression).column("row_id").to_numpy()

    def ids_under(self, directory: str | os.PathLike[str]) -> np.ndarray:
        """Ascending row ids of the images inside `directory` (recursively)."""
        prefix = stored_path(os.path.join(os.path.abspath(directory), ""))
        return self.ids_where(pc.starts_with(pc.field("path"), prefix))

    def indexed_paths(self, paths: Iterable[str]) -> set[str]:
        """Those of `paths` that are live image rows."""
        wanted = pa.array(stored_paths(dict.fromkeys(paths)), pa.string())
        if not len(wanted):
            return set()
        return set(
            original_paths(self._snapshot.where(["path"], pc.field("path").isin(wanted)).column("path").to_pylist())
        )

    def path_bounds(self) -> tuple[str, str] | None:
        """The first and the last live path in string order (None: no rows). Every path lies between them, so they
        share every path's common prefix (the server names paths relative to it). O(N): reads the path column
        once, in Arrow, for a caller that keeps the answer per index state."""
        column = self._snapshot.where(["path"]).column("path")
        if len(column) == 0:
            return None
        bounds = pc.min_max(column)
        return original_path(bounds["min"].as_py()), original_path(bounds["max"].as_py())

    def failed(self) -> list[FailedRow]:
        return [
            FailedRow(**{**record, "path": original_path(record["path"])})
            for record in self._snapshot.failures().to_pylist()
        ]

    # --- search ----------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, *, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities [Q, k'], row ids [Q, k']) best first, with k' = min(k, len(self)); never -1. `probes`: visit
        at most this many IVF lists instead of the tuned number, for queries that are indexed rows looking for their
        near-copies (`duplicates`), which share their list."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        dim = self.identity.embedding_dim
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise ValueError(f"queries must have shape [Q, {dim}], got {list(queries.shape)}")
        k = min(k, len(self))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        results = [self._fresh_search(queries, k)]
        if self._ann is not None:
            results.append(self._ann.search(queries, k, self._excluded, probes))
        similarities, ids = _best_of(results, k)
        short = (ids < 0).any(axis=1)  # an approximate index can come back short: search those exactly
        if short.any():
            similarities[short], ids[short] = self._exact_search(queries[short], k)
        return similarities, ids

    @cached_property
    def _excluded(self) -> np.ndarray:
        return np.union1d(self._snapshot.dead, self._snapshot.ann_dead)

    @cached_property
    def _fresh(self) -> tuple[np.ndarray, np.ndarray]:
        """(row ids, embeddings) of the live rows the ANN file does not hold (all rows without one)."""
        entry = self.manifest.get("ann") if self._ann is not None else None
        table = self._snapshot.where(["row_id", "embedding"], min_row_id=entry["covered_below"] if entry else 0)
        return table.column("row_id").to_numpy(), embeddings_matrix(
            table.column("embedding"), self.identity.embedding_dim
        )

    def _fresh_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, embeddings = self._fresh
        if not len(ids):
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        similarities, positions = _exact_search(embeddings, queries, min(k, len(ids)))
        return similarities, ids[positions]

    def _exact_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        table = self._snapshot.where(["row_id", "embedding"])
        embeddings = embeddings_matrix(table.column("embedding"), self.identity.embedding_dim)
        similarities, positions = _exact_search(embeddings, queries, k)
        return similarities, table.column("row_id").to_numpy()[positions]


def _file_id(path: Path) -> tuple[int, int] | None:
    """Taken before the manifest is read: a commit in between can only make a state look new (a needless
    reload for a caller comparing state_id), never make a new state look old."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _best_of(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-source top-k lists (ids -1 = none) into one top-k, best first."""
    similarities = np.concatenate([s for s, _ in results], axis=1)
    ids = np.concatenate([i for _, i in results], axis=1)
    similarities = np.where(ids < 0, -np.inf, similarities)
    order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    best_ids = np.take_along_axis(ids, order, axis=1)
    best = np.take_along_axis(similarities, order, axis=1).astype(np.float32)
    if best_ids.shape[1] < k:
        pad = k - best_ids.shape[1]
        best_ids = np.pad(best_ids, ((0, 0), (0, pad)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
    best_ids[~np.isfinite(best)] = -1
    return best, best_ids.astype(np.int64)


def _exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k (positions into `embeddings`) without copying them into an index."""
    return faiss.knn(queries, np.ascontiguousarray(embeddings, dtype=np.float32), k, metric=faiss.METRIC_INNER_PRODUCT)
