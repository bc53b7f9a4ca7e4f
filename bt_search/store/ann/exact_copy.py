"""The exact vectors an IVF-SQ8 or IVF-PQ file re-scores its shortlist with.

Their codes rank approximately; the shortlist (k x refine_factor rows) is re-scored with the float32
embeddings. Reading those from the Parquet parts would read a whole row group per row, so the ANN file
keeps a copy of the vectors it covers: two .npy files (ascending row ids, and the [n, D] vectors in that
order), memory-mapped at search, so a query pages in only the rows of its shortlist.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bt_search.store.ann.faiss_index import ExactVectors
from bt_search.store.files import durable_replace, temporary_path

COPY_CHUNK_ROWS = 65_536


class ExactCopyWriter:
    """Streams (ids, vectors) into temporary .npy files; commit() makes them durable under their names."""

    def __init__(self, directory: Path, names: dict[str, str], rows: int, dim: int):
        self._targets = (directory / names["ids_file"], directory / names["vectors_file"])
        self._tmps = tuple(temporary_path(target) for target in self._targets)
        self._ids = np.lib.format.open_memmap(self._tmps[0], "w+", np.int64, (rows,))
        self._vectors = np.lib.format.open_memmap(self._tmps[1], "w+", np.float32, (rows, dim))
        self._filled = 0

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        end = self._filled + len(ids)
        self._ids[self._filled : end] = ids
        self._vectors[self._filled : end] = vectors
        self._filled = end

    def add_chunks(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """Pass `chunks` through, copying each (so one pass over the parts fills the index and the copy)."""
        for ids, vectors in chunks:
            self.add(ids, vectors)
            yield ids, vectors

    def commit(self) -> None:
        if self._filled != len(self._ids):
            raise RuntimeError(f"exact copy got {self._filled} rows, expected {len(self._ids)}")
        for array in (self._ids, self._vectors):
            array.flush()
        del self._ids, self._vectors  # close the maps before the rename
        for tmp, target in zip(self._tmps, self._targets, strict=True):
            durable_replace(tmp, target)


def open_exact_copy(directory: Path, names: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(ascending row ids, vectors) memory-mapped read-only; FileNotFoundError when gone."""
    ids = np.load(directory / names["ids_file"], mmap_mode="r")
    vectors = np.load(directory / names["vectors_file"], mmap_mode="r")
    return ids, vectors


def exact_lookup(ids: np.ndarray, vectors: np.ndarray) -> ExactVectors:
    """vectors of the given row ids (all covered by the copy), reading only their rows."""

    def lookup(wanted: np.ndarray) -> np.ndarray:
        return np.asarray(vectors[np.searchsorted(ids, wanted)])

    return lookup


def copy_chunks(ids: np.ndarray, vectors: np.ndarray, keep: np.ndarray) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """The rows of a memory-mapped copy where `keep` is true, a chunk at a time (bounded memory)."""
    for start in range(0, len(ids), COPY_CHUNK_ROWS):
        rows = slice(start, start + COPY_CHUNK_ROWS)
        yield np.asarray(ids[rows])[keep[rows]], np.asarray(vectors[rows])[keep[rows]]
