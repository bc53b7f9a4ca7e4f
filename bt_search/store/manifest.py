"""The format 2 manifest: a JSON object that names every data file of one committed state.

Pure functions from one manifest to the next; writer.py writes them (atomically) and files.py reads them.
Field reference: docs/format.md.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import numpy as np

from bt_search import __version__
from bt_search.store.files import ANN_DIR, FAILED_DIR, FORMAT_VERSION, PARTS_DIR, TOMBSTONES_DIR
from bt_search.store.records import IndexIdentity


def new_manifest(identity: IndexIdentity) -> dict[str, Any]:
    now = now_iso()
    return {
        "format_version": FORMAT_VERSION,
        "index_id": uuid.uuid4().hex,  # tells this index from another built at the same place; older ones lack it
        **identity.to_manifest(),
        "index_type": None,  # of the ANN file, as of the last finish()
        "index_choice": "auto",  # what the user asked for; kept until they ask again
        "counts": {"images": 0, "failed": 0},
        "generation": 0,
        "next_row_id": 0,
        "next_file": 1,
        "parts": [],
        "tombstones": [],
        "failed_parts": [],
        "ann": None,
        "settings": {},
        "created": now,
        "updated": now,
        "tool_version": __version__,
    }


def file_name(manifest: dict[str, Any], kind: str) -> str:
    """A new, never-used name for a data file of `kind` (part, tombstones, failed, ann, ann-dead, ann-copy...)."""
    folder, stem, ext = {
        "part": (PARTS_DIR, "part", "parquet"),
        "tombstones": (TOMBSTONES_DIR, "tomb", "parquet"),
        "failed": (FAILED_DIR, "failed", "parquet"),
        "ann": (ANN_DIR, "ann", "faiss"),
        "ann-dead": (ANN_DIR, "dead", "parquet"),
        "ann-copy-ids": (ANN_DIR, "copy-ids", "npy"),
        "ann-copy": (ANN_DIR, "copy", "npy"),
    }[kind]
    return f"{folder}/{stem}-{manifest['next_file']:08d}.{ext}"


def part_entry(name: str, row_ids: np.ndarray, level: int) -> dict[str, Any]:
    return {
        "file": name,
        "rows": len(row_ids),
        "row_id_min": int(row_ids.min()),
        "row_id_max": int(row_ids.max()),
        "level": level,
    }


def advanced(manifest: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The next manifest: `changes` applied, a new generation, file counter and timestamp."""
    return {
        **manifest,
        **changes,
        "generation": manifest["generation"] + 1,
        "next_file": manifest["next_file"] + 1,
        "updated": now_iso(),
        "tool_version": __version__,
    }


def live_count(manifest: dict[str, Any], dead: int) -> int:
    return sum(part["rows"] for part in manifest["parts"]) - dead


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
