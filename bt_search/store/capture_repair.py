"""Repair of capture columns holding the string "nan" where EXIF had no value.

`--executor ray` before this repair stored "nan" in `taken_at`, `camera_make` or `camera_model` when a whole
batch lacked that value (Ray Data turned an all-None column into float NaN). Such rows broke date filters,
and a later run saw them unchanged, so the writer repairs them once per index: every part holding a "nan"
there is rewritten with nulls instead, keeping its row ids, level and embeddings (the ANN file and the
tombstones stay valid). One commit per part, so a crash keeps the parts already repaired; the manifest
setting REPAIRED_SETTING, recorded last, spares later writers the scan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bt_search.store.files import write_parquet
from bt_search.store.manifest import file_name, part_entry
from bt_search.store.parts import Part, Snapshot

CAPTURE_COLUMNS = ("taken_at", "camera_make", "camera_model")
NAN_TEXT = "nan"
REPAIRED_SETTING = "capture_nan_repaired"


def parts_to_repair(snapshot: Snapshot) -> list[int]:
    """Positions of the parts with a "nan" capture value: one scan of the three string columns, O(N) once
    per index (the setting then says it is done)."""
    return [position for position, part in enumerate(snapshot.parts) if _nan_columns(part)]


def repaired_part(directory: Path, manifest: dict[str, Any], snapshot: Snapshot, position: int) -> dict[str, Any]:
    """Write part `position` again with its "nan" capture values null; the manifest naming the new file."""
    part = snapshot.parts[position]
    table = part.read(part.column_names)
    for name in _nan_columns(part):
        column = table.column(name)
        fixed = pc.if_else(pc.equal(column, NAN_TEXT), pa.scalar(None, column.type), column)
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), fixed)
    name = file_name(manifest, "part")
    write_parquet(table, directory / name)
    parts = list(manifest["parts"])
    parts[position] = part_entry(name, table.column("row_id").to_numpy(), parts[position]["level"])
    return {**manifest, "parts": parts, "next_file": manifest["next_file"] + 1}


def _nan_columns(part: Part) -> list[str]:
    present = [name for name in CAPTURE_COLUMNS if name in part.column_names]
    if not present:
        return []
    table = part.read(present, _any_nan(present))
    return [name for name in present if pc.any(pc.equal(table.column(name), NAN_TEXT)).as_py()]


def _any_nan(names: list[str]) -> pc.Expression:
    condition = pc.field(names[0]) == NAN_TEXT
    for name in names[1:]:
        condition = condition | (pc.field(name) == NAN_TEXT)
    return condition
