"""Format 1 indexes: images.parquet + failed.parquet with pending segments applied (read-only).

Every entry in those files is an operation on one path (an image row, a failure, or a removal); the
last operation per path wins, in order: images.parquet, failed.parquet, then segments by number.
A format 1 index is read whole, once: by a reader, or by the writer that upgrades it (upgrade.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bt_search.errors import IndexFormatError, IndexLockedError
from bt_search.store.files import (
    FAILED_SCHEMA,
    META_COLUMNS,
    V1_FAILED_FILE,
    V1_IMAGES_FILE,
    V1_PENDING_DIR,
    embedding_type,
    part_schema,
    rebuild_hint,
)
from bt_search.store.parts import last_write_indices

_V1_META = ["path", "size", "mtime_ns", "sha256", "width", "height"]
_SEGMENT_NAME = re.compile(r"seg-(\d+)\.parquet")
_ATTEMPTS = 5
_DAMAGED_SEGMENT_HINT = "delete that file: the next `bt-search index` run indexes its batch again"


def load_v1(directory: Path, manifest: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
    """(live image rows as a v2 part table with row_id = position, failures) of a format 1 index."""
    # A v1 writer's finish() may delete a segment between listing and reading: start over.
    for _ in range(_ATTEMPTS):
        try:
            return _load_once(directory, manifest)
        except FileNotFoundError:
            continue
    raise IndexLockedError(f"index {directory} is being rewritten by a bt-search index run; try again")


def _load_once(directory: Path, manifest: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
    dim = int(manifest["embedding_dim"])
    finished = manifest.get("generation", 0) > 0  # finish() wrote both files before the manifest
    images = _read(directory / V1_IMAGES_FILE, finished, rebuild_hint(directory))
    failed = _read(directory / V1_FAILED_FILE, finished, rebuild_hint(directory))
    segments = [_read(path, True, _DAMAGED_SEGMENT_HINT) for path in _segment_paths(directory)]
    sources = [_as_ops(images, "image", dim), _as_ops(failed, "failed", dim)]
    sources += [_as_ops(segment, None, dim) for segment in segments]
    ops = pa.concat_tables(sources)
    kept = ops.take(last_write_indices(ops.column("path")))
    live = kept.filter(pc.equal(kept.column("op"), "image"))
    failures = kept.filter(pc.equal(kept.column("op"), "failed")).select(FAILED_SCHEMA.names).cast(FAILED_SCHEMA)
    return _as_part(live, dim), failures


def _read(path: Path, required: bool, hint: str) -> pa.Table | None:
    """The table at `path`; None when it is absent and not `required`. A vanished segment raises
    FileNotFoundError (load_v1 starts over)."""
    if not required and not path.exists():
        return None
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        if path.parent.name == V1_PENDING_DIR:
            raise
        raise IndexFormatError(f"{path} is missing; {hint}") from None
    except (OSError, pa.ArrowException) as exc:
        raise IndexFormatError(f"{path} is damaged ({exc}); {hint}") from exc


def _segment_paths(directory: Path) -> list[Path]:
    numbered = []
    for path in (directory / V1_PENDING_DIR).glob("seg-*.parquet"):
        match = _SEGMENT_NAME.fullmatch(path.name)
        if match:
            numbered.append((int(match.group(1)), path))
    return [path for _, path in sorted(numbered)]


def _as_ops(table: pa.Table | None, op: str | None, dim: int) -> pa.Table:
    """`table` with every column an operation can carry (missing ones null); `op` fills op unless None."""
    names = [*_V1_META, "reason", "op", "embedding"]
    types = {**{n: part_schema(dim).field(n).type for n in _V1_META}, "reason": pa.string(), "op": pa.string()}
    types["embedding"] = embedding_type(dim)
    n = table.num_rows if table is not None else 0
    columns = []
    for name in names:
        if name == "op" and op is not None:
            columns.append(pa.repeat(pa.scalar(op, pa.string()), n))
        elif table is not None and name in table.column_names:
            columns.append(table.column(name).cast(types[name]))
        else:
            columns.append(pa.nulls(n, types[name]))
    return pa.Table.from_arrays(columns, names=names)


def _as_part(live: pa.Table, dim: int) -> pa.Table:
    schema = part_schema(dim)
    columns = {"row_id": pa.array(np.arange(live.num_rows, dtype=np.int64))}
    for name in META_COLUMNS + ["embedding"]:
        field = schema.field(name)
        columns[name] = (
            live.column(name).cast(field.type) if name in live.column_names else pa.nulls(live.num_rows, field.type)
        )
    return pa.Table.from_pydict(columns, schema=schema)
