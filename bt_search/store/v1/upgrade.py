"""Upgrade a format 1 index in place: one part + one failure part, then the v2 manifest.

The v2 manifest's rename is the single switch: before it the directory is a v1 index (with some
orphan v2 files, removed by the next attempt), after it a v2 index (with orphan v1 files, removed by
files.remove_orphans). Row ids are the v1 row positions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bt_search.store.compaction import FANOUT
from bt_search.store.files import remove_v2_leftovers, write_manifest, write_parquet
from bt_search.store.manifest import advanced, file_name, new_manifest, part_entry
from bt_search.store.records import IndexIdentity
from bt_search.store.v1.reader import load_v1

_TYPICAL_COMMIT_ROWS = 256


def upgrade_v1(directory: Path, v1: dict[str, Any]) -> dict[str, Any]:
    """Rewrite the v1 index at `directory` as format 2 (call with the writer lock held); the new manifest."""
    remove_v2_leftovers(directory)
    part, failures = load_v1(directory, v1)
    manifest = {
        **new_manifest(IndexIdentity.from_manifest(v1)),
        "created": v1.get("created"),
        "generation": int(v1.get("generation", 0)),
        "settings": v1.get("settings") or {},
        "upgraded_from": 1,
    }
    if part.num_rows:
        name = file_name(manifest, "part")
        write_parquet(part, directory / name)
        entry = part_entry(name, part.column("row_id").to_numpy(), level=_level_for(part.num_rows))
        manifest = {**manifest, "parts": [entry], "next_row_id": part.num_rows, "next_file": manifest["next_file"] + 1}
    if failures.num_rows:
        name = file_name(manifest, "failed")
        write_parquet(failures, directory / name)
        entry = {"file": name, "rows": failures.num_rows}
        manifest = {**manifest, "failed_parts": [entry], "next_file": manifest["next_file"] + 1}
    manifest = advanced(manifest, counts={"images": part.num_rows, "failed": failures.num_rows})
    write_manifest(directory, manifest)
    return manifest


def _level_for(rows: int) -> int:
    """The level a part of `rows` rows would have reached by compaction, so it is not rewritten soon."""
    return max(0, int(math.log(max(rows / _TYPICAL_COMMIT_ROWS, 1), FANOUT)))
