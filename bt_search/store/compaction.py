"""Size-tiered compaction: merge FANOUT parts of one level into one part of the next level.

Commits add level-0 parts. When a level holds FANOUT parts (always a contiguous run: levels never
increase along row ids), they are merged into one part of the next level, dropping tombstoned rows
and the tombstones that pointed at them. A row is therefore rewritten once per level: O(log N) times
over its life. A part more than SOLO_DEAD_SHARE dead is rewritten alone. Merged parts keep their row
ids, so FAISS ids stay tied to rows. Each function writes new files only and returns the manifest that
names them; nothing is visible until the writer commits that manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bt_search.store.files import part_schema, write_parquet
from bt_search.store.manifest import file_name, part_entry
from bt_search.store.parts import Snapshot, open_snapshot

FANOUT = 4
SOLO_DEAD_SHARE = 0.5
MAX_TOMBSTONE_FILES = 8
MAX_FAILURE_FILES = 4


def plan_merge(parts: list[dict[str, Any]], dead: list[int], fanout: int = FANOUT) -> tuple[int, int, int] | None:
    """The next (start, stop, new level) to rewrite, or None. Pure.

    The lowest level whose run of equal-level parts reaches `fanout` merges first; else the first part
    that is more than SOLO_DEAD_SHARE dead is rewritten alone at its level.
    """
    runs, start = [], 0
    for i in range(1, len(parts) + 1):
        if i == len(parts) or parts[i]["level"] != parts[start]["level"]:
            runs.append((start, i, parts[start]["level"]))
            start = i
    full = [run for run in runs if run[1] - run[0] >= fanout]
    if full:
        start, stop, level = min(full, key=lambda run: run[2])
        return start, stop, level + 1
    for i, part in enumerate(parts):
        if part["rows"] and dead[i] / part["rows"] > SOLO_DEAD_SHARE:
            return i, i + 1, part["level"]
    return None


def due_for_compaction(manifest: dict[str, Any]) -> bool:
    """Cheap check after a commit: does the newest level hold FANOUT parts? (tombstones wait for finish)"""
    levels = [part["level"] for part in manifest["parts"]]
    return len(levels) >= FANOUT and len(set(levels[-FANOUT:])) == 1


def compact(directory: Path, manifest: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
    """Merge parts until plan_merge has nothing left; returns the manifest naming the result."""
    dead = snapshot.dead  # shrinks as merges drop the rows it names
    while (step := plan_merge(manifest["parts"], _dead_per_part(manifest["parts"], dead))) is not None:
        start, stop, level = step
        merged = snapshot.parts[start:stop]
        table = pa.concat_tables([part.read(part_schema(snapshot.dim).names) for part in merged])
        ids = table.column("row_id").to_numpy()
        live = ~np.isin(ids, dead)
        entries = []
        if live.any():
            name = file_name(manifest, "part")
            write_parquet(table.filter(pa.array(live)), directory / name)
            entries = [part_entry(name, ids[live], level)]
        dead = dead[(dead < merged[0].row_id_min) | (dead > merged[-1].row_id_max)]
        parts = manifest["parts"][:start] + entries + manifest["parts"][stop:]
        manifest = {**manifest, "parts": parts, "next_file": manifest["next_file"] + 1}
        snapshot = open_snapshot(directory, manifest, snapshot)
    if len(dead) == len(snapshot.dead):
        return manifest
    manifest = _absorb_into_ann_dead(directory, manifest, snapshot, np.setdiff1d(snapshot.dead, dead))
    return _write_tombstones(directory, manifest, dead)


def merge_tombstones(directory: Path, manifest: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
    """One tombstone file instead of many (the union; O(tombstones), not O(N))."""
    if len(manifest["tombstones"]) <= MAX_TOMBSTONE_FILES:
        return manifest
    return _write_tombstones(directory, manifest, snapshot.dead)


def merge_failures(directory: Path, manifest: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
    """One failure file holding the current failures instead of many files of records and clears."""
    if len(manifest["failed_parts"]) <= MAX_FAILURE_FILES:
        return manifest
    failures = snapshot.failures()
    if not failures.num_rows:
        return {**manifest, "failed_parts": []}
    name = file_name(manifest, "failed")
    write_parquet(failures, directory / name)
    entry = {"file": name, "rows": failures.num_rows}
    return {**manifest, "failed_parts": [entry], "next_file": manifest["next_file"] + 1}


def _dead_per_part(parts: list[dict[str, Any]], dead: np.ndarray) -> list[int]:
    lows = np.searchsorted(dead, [part["row_id_min"] for part in parts], side="left")
    highs = np.searchsorted(dead, [part["row_id_max"] for part in parts], side="right")
    return (highs - lows).tolist()


def _write_tombstones(directory: Path, manifest: dict[str, Any], dead: np.ndarray) -> dict[str, Any]:
    if not len(dead):
        return {**manifest, "tombstones": []}
    name = file_name(manifest, "tombstones")
    write_parquet(pa.table({"row_id": pa.array(dead, pa.int64())}), directory / name)
    entry = {"file": name, "rows": len(dead)}
    return {**manifest, "tombstones": [entry], "next_file": manifest["next_file"] + 1}


def _absorb_into_ann_dead(
    directory: Path, manifest: dict[str, Any], snapshot: Snapshot, pruned: np.ndarray
) -> dict[str, Any]:
    """Tombstones about to be dropped may name rows the ANN file still holds: list them in its dead file."""
    ann = manifest.get("ann")
    if not ann:
        return manifest
    held = pruned[pruned < ann["covered_below"]]
    dead = np.union1d(snapshot.ann_dead, held)
    if len(dead) == len(snapshot.ann_dead):
        return manifest
    return write_ann_dead(directory, manifest, dead)


def write_ann_dead(directory: Path, manifest: dict[str, Any], dead: np.ndarray) -> dict[str, Any]:
    """The manifest with the ANN file's dead-id list replaced by `dead` (a new file, or none)."""
    ann = dict(manifest["ann"])
    ann["dead"] = len(dead)
    ann["dead_file"] = None
    if len(dead):
        ann["dead_file"] = file_name(manifest, "ann-dead")
        write_parquet(pa.table({"row_id": pa.array(dead, pa.int64())}), directory / ann["dead_file"])
    return {**manifest, "ann": ann, "next_file": manifest["next_file"] + 1}
