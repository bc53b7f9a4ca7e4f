"""A pinned view of the data files one manifest names: parts, tombstones and failure parts.

Opening memory-maps every named file (O(parts), no Parquet scan), so a compaction that deletes a
superseded file later cannot change what this view reads. Rows are read on demand: by row id (only
the row groups that hold those ids) or by an Arrow filter expression (only the columns it needs).
A file named by the manifest that is already gone raises FileNotFoundError: the caller re-reads the
manifest (a writer compacted meanwhile) and opens again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from bt_search.errors import IndexFormatError
from bt_search.store.files import FAILED_SCHEMA, LATER_COLUMNS, part_schema, rebuild_hint, with_later_columns
from bt_search.store.records import embeddings_matrix

_FORMAT = ds.ParquetFileFormat()


class Part:
    """One immutable part (a memory-mapped Parquet file, or an in-memory table for format 1)."""

    def __init__(self, entry: dict[str, Any], source: pa.NativeFile | pa.Table, path: Path | None = None):
        self.entry = entry
        self._source = source
        self._path = path
        self._file: pq.ParquetFile | None = None
        self._group_min_ids: np.ndarray | None = None

    @classmethod
    def open(cls, directory: Path, entry: dict[str, Any]) -> Part:
        path = directory / entry["file"]
        return cls(entry, pa.memory_map(str(path)), path)  # FileNotFoundError: see the module docstring

    @property
    def row_id_min(self) -> int:
        return int(self.entry["row_id_min"])

    @property
    def row_id_max(self) -> int:
        return int(self.entry["row_id_max"])

    @property
    def column_names(self) -> list[str]:
        """The columns the part holds (parts written before a column existed lack it)."""
        if isinstance(self._source, pa.Table):
            return self._source.column_names
        return self._parquet.schema_arrow.names

    def read(self, columns: list[str], filter: pc.Expression | None = None) -> pa.Table:
        """The rows matching `filter` (all when None), in row id order, reading only the columns needed (a
        LATER_COLUMNS column the part lacks reads as nulls)."""
        present = self._present(columns)
        if isinstance(self._source, pa.Table):
            table = self._source if filter is None else self._source.filter(filter)
            return with_later_columns(table.select(present), columns)
        try:
            table = _FORMAT.make_fragment(self._source).to_table(columns=present, filter=filter)
        except (OSError, pa.ArrowException) as exc:
            raise _damaged(self._path, exc) from exc
        return with_later_columns(table, columns)

    def _present(self, columns: list[str]) -> list[str]:
        """`columns` less the LATER_COLUMNS this part was written without."""
        if not any(name in LATER_COLUMNS for name in columns):
            return columns
        held = set(self.column_names)
        return [name for name in columns if name not in LATER_COLUMNS or name in held]

    def take(self, ids: np.ndarray, columns: list[str]) -> pa.Table:
        """The rows with these ascending row ids that the part holds, reading only their row groups."""
        if isinstance(self._source, pa.Table):
            table = self._source
        else:
            groups = np.unique(np.searchsorted(self.group_min_ids, ids, side="right") - 1)
            try:
                table = self._parquet.read_row_groups(groups.tolist(), columns=["row_id", *self._present(columns)])
            except (OSError, pa.ArrowException) as exc:
                raise _damaged(self._path, exc) from exc
        table = with_later_columns(table, list(dict.fromkeys(["row_id", *columns])))
        row_ids = table.column("row_id").to_numpy()
        positions = np.minimum(np.searchsorted(row_ids, ids), max(len(row_ids) - 1, 0))
        found = positions[row_ids[positions] == ids] if len(row_ids) else positions[:0]
        return table.take(found).select(["row_id", *columns] if "row_id" not in columns else columns)

    def batches(self, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Every row of the part in row id order, `batch_rows` at a time (memory holds one batch)."""
        if any(name in LATER_COLUMNS for name in columns):  # ANN builds ask for row_id and embedding only
            yield from self.read(columns).to_batches(max_chunksize=batch_rows)
            return
        if isinstance(self._source, pa.Table):
            yield from self._source.select(columns).to_batches(max_chunksize=batch_rows)
            return
        try:
            yield from self._parquet.iter_batches(batch_size=batch_rows, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise _damaged(self._path, exc) from exc

    @property
    def _parquet(self) -> pq.ParquetFile:
        if self._file is None:
            try:
                self._file = pq.ParquetFile(self._source)
            except (OSError, pa.ArrowException) as exc:
                raise _damaged(self._path, exc) from exc
        return self._file

    @property
    def group_min_ids(self) -> np.ndarray:
        """Smallest row id of each row group (from the footer's statistics)."""
        if self._group_min_ids is None:
            metadata = self._parquet.metadata
            column = self._parquet.schema_arrow.get_field_index("row_id")
            self._group_min_ids = np.array(
                [metadata.row_group(g).column(column).statistics.min for g in range(metadata.num_row_groups)],
                dtype=np.int64,
            )
        return self._group_min_ids


@dataclass
class Snapshot:
    """The data one manifest names, pinned; `dead` = tombstoned row ids still present in parts."""

    directory: Path
    manifest: dict[str, Any]
    parts: list[Part]  # ascending, disjoint row id ranges
    dead: np.ndarray  # sorted int64
    ann_dead: np.ndarray  # sorted int64: row ids the ANN file holds that are no longer live
    _failed_sources: list[pa.NativeFile] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    def live(self, ids: np.ndarray) -> np.ndarray:
        """Mask of `ids` that are not tombstoned (ids must exist in some part)."""
        return ~np.isin(ids, self.dead)

    def take(self, ids: np.ndarray, columns: list[str]) -> pa.Table:
        """Rows of the given live row ids, in that order (repeats allowed); KeyError for any other id."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        unique, inverse = np.unique(ids, return_inverse=True)
        pieces = []
        bounds = np.array([part.row_id_min for part in self.parts], dtype=np.int64)
        owner = np.searchsorted(bounds, unique, side="right") - 1
        for index in np.unique(owner[owner >= 0]):
            pieces.append(self.parts[index].take(unique[owner == index], columns))
        table = pa.concat_tables(pieces) if pieces else part_schema(self.dim).empty_table()
        found = table.column("row_id").to_numpy()
        if len(found) != len(unique) or not self.live(found).all():
            missing = np.setdiff1d(unique, found[self.live(found)])
            raise KeyError(f"row ids not in the index: {missing[:5].tolist()}")
        return table.take(pa.array(inverse.reshape(-1))).select(columns)

    def where(self, columns: list[str], filter: pc.Expression | None = None, min_row_id: int = 0) -> pa.Table:
        """Live rows matching `filter` with row_id >= min_row_id, ascending by row id."""
        if min_row_id > 0:
            bound = pc.field("row_id") >= min_row_id
            filter = bound if filter is None else filter & bound
        wanted = list(dict.fromkeys(["row_id", *columns]))
        pieces = [part.read(wanted, filter) for part in self.parts if part.row_id_max >= min_row_id]
        if not pieces:
            return part_schema(self.dim).empty_table().select(columns)
        table = pa.concat_tables(pieces)
        if len(self.dead):
            table = table.filter(pa.array(self.live(table.column("row_id").to_numpy())))
        return table.select(columns)

    def live_vectors(self, min_row_id: int = 0, batch_rows: int = 65_536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row ids, [n, D] float32 embeddings) of the live rows with row_id >= min_row_id, ascending, in
        batches: streams any number of rows in bounded memory (ANN builds and folds)."""
        for part in self.parts:
            if part.row_id_max < min_row_id:
                continue
            for batch in part.batches(["row_id", "embedding"], batch_rows):
                ids = batch.column(0).to_numpy()
                keep = (ids >= min_row_id) & self.live(ids)
                if keep.any():
                    vectors = embeddings_matrix(batch.column(1), self.dim)
                    yield ids[keep], vectors[keep] if not keep.all() else vectors

    def failures(self) -> pa.Table:
        """path, reason, size, mtime_ns of every recorded failure (last record per path wins)."""
        tables = [pq.read_table(source) for source in self._failed_sources]
        if not tables:
            return FAILED_SCHEMA.empty_table()
        ops = pa.concat_tables(tables)
        kept = ops.take(last_write_indices(ops.column("path")))
        return kept.filter(pc.is_valid(kept.column("reason")))


def open_snapshot(directory: Path, manifest: dict[str, Any], reuse: Snapshot | None = None) -> Snapshot:
    """Pin the files `manifest` names (reusing what `reuse` already pinned); FileNotFoundError if one is gone."""
    known = {part.entry["file"]: part for part in reuse.parts} if reuse else {}
    parts = [known.get(entry["file"]) or Part.open(directory, entry) for entry in manifest.get("parts", [])]
    dead = _read_ids(directory, [entry["file"] for entry in manifest.get("tombstones", [])])
    ann = manifest.get("ann") or {}
    ann_dead = _read_ids(directory, [ann["dead_file"]] if ann.get("dead_file") else [])
    failed = [pa.memory_map(str(directory / entry["file"])) for entry in manifest.get("failed_parts", [])]
    return Snapshot(directory, manifest, parts, dead, ann_dead, failed)


def in_memory_snapshot(directory: Path, manifest: dict[str, Any], part: pa.Table, failed: pa.Table) -> Snapshot:
    """A snapshot of a format 1 index, read whole into memory (see legacy.py)."""
    entry = {"file": None, "rows": part.num_rows, "row_id_min": 0, "row_id_max": part.num_rows - 1, "level": 0}
    snapshot = Snapshot(directory, manifest, [Part(entry, part)], np.zeros(0, np.int64), np.zeros(0, np.int64))
    snapshot.failures = lambda: failed  # type: ignore[method-assign]
    return snapshot


def _read_ids(directory: Path, files: list[str]) -> np.ndarray:
    arrays = []
    for name in files:
        try:
            arrays.append(pq.read_table(pa.memory_map(str(directory / name))).column("row_id").to_numpy())
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise _damaged(directory / name, exc) from exc
    return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, np.int64)


def last_write_indices(paths: pa.ChunkedArray) -> np.ndarray:
    """Ascending indices of the last occurrence of each distinct path: last write wins."""
    n = len(paths)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    codes = pc.dictionary_encode(paths.combine_chunks()).indices.to_numpy()
    _, first_from_end = np.unique(codes[::-1], return_index=True)
    return np.sort(n - 1 - first_from_end).astype(np.int64)


def _damaged(path: Path | None, exc: Exception) -> IndexFormatError:
    directory = path.parent.parent if path else Path(".")
    return IndexFormatError(f"{path} is damaged ({exc}); {rebuild_hint(directory)}")
