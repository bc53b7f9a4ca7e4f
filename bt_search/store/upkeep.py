"""finish()'s ANN step: keep, fold fresh rows into, or rebuild the ANN file (thresholds: ann_upkeep.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .ann_upkeep import (
    AnnState,
    add_rows,
    build_index,
    choose_index_type,
    plan_upkeep,
    read_index,
    remove_rows,
    write_index,
)
from .compaction import write_ann_dead
from .manifest import file_name, live_count
from .parts import Snapshot
from .records import embeddings_matrix


def update_ann(directory: Path, manifest: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
    """The manifest after bringing the ANN file up to date with the live rows (new files written)."""
    live = live_count(manifest, len(snapshot.dead))
    choice = manifest.get("index_choice") or "auto"
    wanted = choose_index_type(live) if choice == "auto" else choice
    ann = manifest.get("ann")
    covered = ann["covered_below"] if ann else 0
    fresh = snapshot.where(["row_id"], min_row_id=covered).num_rows
    # Every dead row the ANN file may hold: its list, plus rows tombstoned since it was written.
    held_dead = np.union1d(snapshot.ann_dead, snapshot.dead[snapshot.dead < covered])
    state = AnnState(ann["type"], ann["rows"], ann["dead"], ann["trained_rows"]) if ann else None
    action = plan_upkeep(state, wanted, live, fresh, len(held_dead), snapshot.dim)
    if action == "rebuild":
        return _rebuild(directory, manifest, snapshot, wanted)
    if action == "fold":
        return _fold(directory, manifest, snapshot, held_dead)
    if ann and len(held_dead) != len(snapshot.ann_dead):
        return write_ann_dead(directory, manifest, held_dead)
    return manifest


def _rebuild(directory: Path, manifest: dict[str, Any], snapshot: Snapshot, index_type: str) -> dict[str, Any]:
    table = snapshot.where(["row_id", "embedding"])
    if not table.num_rows:
        return {**manifest, "ann": None, "index_type": None}
    ids = table.column("row_id").to_numpy()
    index = build_index(embeddings_matrix(table.column("embedding"), snapshot.dim), ids, index_type)
    name = file_name(manifest, "ann")
    write_index(index, directory / name)
    ann = {
        "file": name,
        "type": index_type,
        "rows": int(index.ntotal),
        "covered_below": int(manifest["next_row_id"]),
        "trained_rows": len(ids),
        "dead": 0,
        "dead_file": None,
    }
    return {**manifest, "ann": ann, "index_type": index_type, "next_file": manifest["next_file"] + 1}


def _fold(directory: Path, manifest: dict[str, Any], snapshot: Snapshot, held_dead: np.ndarray) -> dict[str, Any]:
    """Add the fresh rows to the existing index (its trained quantizer, its graph); drop dead rows where cheap."""
    ann = manifest["ann"]
    index = read_index(directory / ann["file"], mmap=False)
    fresh = snapshot.where(["row_id", "embedding"], min_row_id=ann["covered_below"])
    add_rows(index, embeddings_matrix(fresh.column("embedding"), snapshot.dim), fresh.column("row_id").to_numpy())
    still_dead = np.zeros(0, np.int64) if remove_rows(index, held_dead) else held_dead
    name = file_name(manifest, "ann")
    write_index(index, directory / name)
    ann = {**ann, "file": name, "rows": int(index.ntotal), "covered_below": int(manifest["next_row_id"])}
    manifest = {**manifest, "ann": ann, "next_file": manifest["next_file"] + 1}
    return write_ann_dead(directory, manifest, still_dead)
