"""The merged view of an index directory: images.parquet + failed.parquet with pending segments applied.

Every entry in the files is an operation on one path (an image row, a failure, or a removal); the
last operation per path wins, in order: images.parquet, failed.parquet, then segments by number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import IndexFormatError, IndexLockedError
from .index_files import (
    FAILED_COLUMNS,
    FAILED_FILE,
    FAILED_SCHEMA,
    GENERATION_KEY,
    IMAGE_META_COLUMNS,
    IMAGES_FILE,
    OP_FAILED,
    OP_IMAGE,
    OPS_META_SCHEMA,
    images_schema,
    rebuild_hint,
    segment_paths,
)

_SNAPSHOT_ATTEMPTS = 5
_DAMAGED_SEGMENT_HINT = "delete that file: the next `bt-search index` run indexes its batch again"


@dataclass
class Snapshot:
    """The index as of one moment: images.parquet and failed.parquet with the pending segments applied."""

    dim: int
    generation: int  # of the images.parquet read; 0 before the first finish
    images: pa.Table  # live image rows without embeddings; row i is FAISS id i
    failed: pa.Table
    pending_segments: int
    embedding_parts: list[tuple[Callable[[], pa.ChunkedArray], np.ndarray]]  # (load column, rows to take)

    def embeddings(self) -> np.ndarray:
        """[N, dim] float32, in row order (read-only when it is a view of Arrow memory)."""
        pieces = []
        for load, rows in self.embedding_parts:
            if len(rows):
                column = load()
                whole = len(rows) == len(column) and rows[-1] == len(rows) - 1  # rows are ascending
                pieces.append(column if whole else column.take(rows))
        return embeddings_matrix(pieces, self.dim)


def embeddings_matrix(columns: list[pa.ChunkedArray], dim: int) -> np.ndarray:
    chunks = [chunk for column in columns for chunk in column.chunks if len(chunk)]
    if not chunks:
        return np.zeros((0, dim), dtype=np.float32)
    merged = pa.chunked_array(chunks).combine_chunks()
    return merged.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def load_snapshot(directory: Path, manifest: dict[str, Any]) -> Snapshot:
    # A segment can vanish between listing and reading when a writer's finish() compacted it:
    # the images.parquet read may then predate it, so start over (it is rare and quick).
    for _ in range(_SNAPSHOT_ATTEMPTS):
        try:
            return _load_snapshot_once(directory, manifest)
        except FileNotFoundError:
            continue
    raise IndexLockedError(f"index {directory} is being rewritten by a bt-search index run; try again")


def _load_snapshot_once(directory: Path, manifest: dict[str, Any]) -> Snapshot:
    dim = int(manifest["embedding_dim"])
    base = _open_images_file(directory, manifest)
    # Files written before a column existed lack it: _as_ops fills it with nulls.
    base_images = base.read(columns=[c for c in IMAGE_META_COLUMNS if c in base.schema_arrow.names]) if base else images_schema(dim).empty_table()
    base_failed = _read_failed_file(directory, manifest)
    segments = [_read_parquet(path, _DAMAGED_SEGMENT_HINT) for path in segment_paths(directory)]

    sources = [_as_ops(base_images, OP_IMAGE), _as_ops(base_failed, OP_FAILED)]
    sources += [_as_ops(segment.drop_columns(["embedding"]), op=None) for segment in segments]
    ops = pa.concat_tables(sources)
    keep = last_write_indices(ops.column("path"))
    kept_ops = ops.column("op").take(keep)
    image_ops = keep[pc.equal(kept_ops, OP_IMAGE).to_numpy(zero_copy_only=False)]
    failed_ops = keep[pc.equal(kept_ops, OP_FAILED).to_numpy(zero_copy_only=False)]

    loaders = [(lambda: base.read(columns=["embedding"]).column(0)) if base else None, None]
    loaders += [(lambda segment=segment: segment.column("embedding")) for segment in segments]
    return Snapshot(
        dim=dim,
        generation=_generation(base),
        images=ops.take(image_ops).select(IMAGE_META_COLUMNS),
        failed=ops.take(failed_ops).select(FAILED_COLUMNS),
        pending_segments=len(segments),
        embedding_parts=_split_by_source(image_ops, [len(s) for s in sources], loaders),
    )


def _open_images_file(directory: Path, manifest: dict[str, Any]) -> pq.ParquetFile | None:
    path = directory / IMAGES_FILE
    if not path.exists():
        _require_absent_before_first_finish(path, manifest)
        return None
    try:
        # Kept open: embeddings are read lazily from this very file even if it is replaced meanwhile.
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise IndexFormatError(f"{path} is damaged ({exc}); {rebuild_hint(directory)}") from exc


def _read_failed_file(directory: Path, manifest: dict[str, Any]) -> pa.Table:
    path = directory / FAILED_FILE
    if not path.exists():
        _require_absent_before_first_finish(path, manifest)
        return FAILED_SCHEMA.empty_table()
    return _read_parquet(path, rebuild_hint(directory))


def _require_absent_before_first_finish(path: Path, manifest: dict[str, Any]) -> None:
    if manifest.get("generation", 0) > 0:  # finish() writes these files before the manifest
        raise IndexFormatError(f"{path} is missing; {rebuild_hint(path.parent)}")


def _read_parquet(path: Path, hint: str) -> pa.Table:
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        raise  # a segment compacted away meanwhile: load_snapshot starts over
    except (OSError, pa.ArrowException) as exc:
        raise IndexFormatError(f"{path} is damaged ({exc}); {hint}") from exc


def _generation(base: pq.ParquetFile | None) -> int:
    metadata = base.schema_arrow.metadata if base else None
    return int((metadata or {}).get(GENERATION_KEY, b"0"))


def _as_ops(table: pa.Table, op: str | None) -> pa.Table:
    """`table` in OPS_META_SCHEMA; `op` fills the op column (None: the table has one)."""
    n = table.num_rows
    columns = []
    for field in OPS_META_SCHEMA:
        if field.name == "op" and op is not None:
            columns.append(pa.repeat(pa.scalar(op, field.type), n))
        elif field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=OPS_META_SCHEMA)


def last_write_indices(paths: pa.ChunkedArray) -> np.ndarray:
    """Ascending indices of the last occurrence of each distinct path: last write wins."""
    n = len(paths)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    codes = pc.dictionary_encode(paths.combine_chunks()).indices.to_numpy()
    _, first_from_end = np.unique(codes[::-1], return_index=True)
    return np.sort(n - 1 - first_from_end).astype(np.int64)


def _split_by_source(
    op_rows: np.ndarray, source_lengths: list[int], loaders: list[Callable[[], pa.ChunkedArray] | None]
) -> list[tuple[Callable[[], pa.ChunkedArray], np.ndarray]]:
    """Turn ascending indices into the concatenated sources into (loader, local indices) per source."""
    bounds = np.cumsum([0, *source_lengths])
    parts = []
    for start, end, load in zip(bounds[:-1], bounds[1:], loaders, strict=True):
        lo, hi = np.searchsorted(op_rows, [start, end])
        if hi > lo:
            assert load is not None, "failed rows never become image rows"
            parts.append((load, op_rows[lo:hi] - start))
    return parts
