"""The index directory's files: names, schemas, atomic writes, the manifest and the writer lock.

Every file is written to a temporary name in its final directory, fsynced and renamed over the
target, so a reader (or a process killed at any moment) sees either the old file or the new one.
Data files (parts, tombstones, failure parts, ANN files) are never rewritten once named by a
manifest: a new version gets a new name, and manifest.json is the single commit point.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bt_search.errors import IndexFormatError, IndexLockedError, UsageError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

MANIFEST_FILE = "manifest.json"
LOCK_FILE = "lock"
TMP_SUFFIX = ".tmp"
PARTS_DIR, TOMBSTONES_DIR, FAILED_DIR, ANN_DIR = "parts", "tombstones", "failed", "ann"
DATA_DIRS = (PARTS_DIR, TOMBSTONES_DIR, FAILED_DIR, ANN_DIR)

# Format 1 names: read by legacy.py, removed after an upgrade.
V1_IMAGES_FILE, V1_FAILED_FILE, V1_PENDING_DIR = "images.parquet", "failed.parquet", "pending"

META_COLUMNS = [
    "path",
    "size",
    "mtime_ns",
    "sha256",
    "width",
    "height",
    "taken_at",
    "camera_make",
    "camera_model",
    "frame_time",
]
OPTIONAL_COLUMNS = ("taken_at", "camera_make", "camera_model")  # nullable; null in upgraded v1 rows
# Nullable columns that parts written before them lack: read as all null (frame_time null = a still image).
LATER_COLUMNS = ("frame_time",)
_META_TYPES = {
    "path": pa.string(),
    "size": pa.int64(),
    "mtime_ns": pa.int64(),
    "sha256": pa.string(),
    "width": pa.int32(),
    "height": pa.int32(),
    "taken_at": pa.string(),
    "camera_make": pa.string(),
    "camera_model": pa.string(),
    "frame_time": pa.float64(),  # a video frame's time in seconds; null for a still image
}
TOMBSTONE_SCHEMA = pa.schema([("row_id", pa.int64())])
# A failure part row records a failure, or (reason null) clears the failure of that path.
FAILED_SCHEMA = pa.schema(
    [("path", pa.string()), ("reason", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64())]
)
ROW_GROUP_ROWS = 8192  # a lookup by row id reads one row group of the columns it needs


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def with_later_columns(table: pa.Table, columns: list[str]) -> pa.Table:
    """`table` with each LATER_COLUMNS name of `columns` that it lacks added as nulls, in `columns`' order."""
    missing = [name for name in columns if name in LATER_COLUMNS and name not in table.column_names]
    if not missing:
        return table
    for name in missing:
        table = table.append_column(pa.field(name, _META_TYPES[name]), pa.nulls(table.num_rows, _META_TYPES[name]))
    return table.select(columns)


def part_schema(dim: int) -> pa.Schema:
    fields = [("row_id", pa.int64())] + [(name, _META_TYPES[name]) for name in META_COLUMNS]
    return pa.schema(fields + [("embedding", embedding_type(dim))])


def rebuild_hint(directory: Path) -> str:
    """How to rebuild a damaged index: never "delete", since a mistaken --index may name someone's folder."""
    return (
        f"rebuild it: move {directory} aside (e.g. `mv {directory} {directory}.damaged`) "
        f"and run `bt-search index PATH --index {directory}`"
    )


# --- atomic writes -----------------------------------------------------------------------------


def atomic_write(target: Path, write: Callable[[str], None]) -> None:
    """Run `write(tmp_path)`, then make the result durable and visible at `target` in one rename."""
    tmp = temporary_path(target)
    try:
        write(str(tmp))
        durable_replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temporary_path(target: Path) -> Path:
    """Where `target` is written before its rename (a name remove_orphans() deletes after a crash)."""
    target.parent.mkdir(exist_ok=True)
    return target.with_name(f".{target.name}.{os.getpid()}{TMP_SUFFIX}")


def durable_replace(tmp: Path, target: Path) -> None:
    _fsync(tmp)
    os.replace(tmp, target)
    _fsync(target.parent)  # the rename itself must survive a power cut


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet(table: pa.Table, target: Path) -> None:
    # Uncompressed: embeddings do not compress, and plain pages read straight from a memory map.
    atomic_write(target, lambda tmp: pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, compression="none"))


# --- manifest ----------------------------------------------------------------------------------

_MANIFEST_KEYS = ("format_version", "model", "model_revision", "embedding_dim", "preprocessing")


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest, or None when there is none; IndexFormatError when damaged or of an unknown version."""
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path} cannot be read ({exc}); {rebuild_hint(directory)}") from exc
    if not isinstance(manifest, dict) or any(key not in manifest for key in _MANIFEST_KEYS):
        # someone else's manifest.json (a web app's, say): no rebuild advice for a folder that is not ours
        raise IndexFormatError(f"{directory} is not a bt-search index ({path} lacks bt-search's fields); check `index`")
    version = manifest["format_version"]
    if version not in READABLE_VERSIONS:
        raise IndexFormatError(
            f"index {directory} has format version {version!r}, this bt-search reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; use the bt-search that wrote it, or {rebuild_hint(directory)}"
        )
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    atomic_write(directory / MANIFEST_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def named_files(manifest: dict[str, Any]) -> set[str]:
    """Every data file a v2 manifest names, relative to the index directory."""
    names = {entry["file"] for key in ("parts", "failed_parts", "tombstones") for entry in manifest.get(key, [])}
    ann = manifest.get("ann")
    if ann:
        names.add(ann["file"])
        if ann.get("dead_file"):
            names.add(ann["dead_file"])
        if ann.get("exact_copy"):
            names.update(ann["exact_copy"].values())
    return names


def remove_orphans(directory: Path, manifest: dict[str, Any]) -> None:
    """Delete what a v2 manifest does not name: crash leftovers, superseded files, format 1 files.

    Call only while holding the writer lock. A reader that still needs a superseded file either holds
    it open already or re-reads the manifest (see reader.py).
    """
    keep = named_files(manifest)
    for folder in DATA_DIRS:
        for path in (directory / folder).glob("*") if (directory / folder).is_dir() else ():
            if f"{folder}/{path.name}" not in keep:
                path.unlink(missing_ok=True)
    for leftover in directory.glob(f".*{TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    for name in (V1_IMAGES_FILE, V1_FAILED_FILE):
        (directory / name).unlink(missing_ok=True)
    for path in directory.glob("images.*.faiss"):
        path.unlink(missing_ok=True)
    pending = directory / V1_PENDING_DIR
    if pending.is_dir():
        for path in pending.iterdir():
            path.unlink(missing_ok=True)
        pending.rmdir()


def remove_v2_leftovers(directory: Path) -> None:
    """Before a format 1 index is upgraded: drop the files of an upgrade that crashed before its manifest."""
    for folder in DATA_DIRS:
        if (directory / folder).is_dir():
            for path in (directory / folder).iterdir():
                path.unlink(missing_ok=True)
    for folder in (directory, directory / V1_PENDING_DIR):
        for leftover in folder.glob(f".*{TMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)


# --- directory and writer lock -----------------------------------------------------------------


def prepare_directory(directory: Path) -> None:
    """Create the index directory, refusing to scatter index files into an unrelated folder."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file; give `index` a directory")
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / MANIFEST_FILE).exists():
        foreign = [name for name in os.listdir(directory) if not _is_index_file_name(name)]
        if foreign:
            raise UsageError(
                f"{directory} is not empty and is not a bt-search index (it holds {foreign[0]!r}); "
                "give `index` a new or empty directory"
            )


def _is_index_file_name(name: str) -> bool:
    return (
        name in (LOCK_FILE, *DATA_DIRS, V1_PENDING_DIR, V1_IMAGES_FILE, V1_FAILED_FILE)
        or (name.startswith(".") and name.endswith(TMP_SUFFIX))
        or (name.startswith("images.") and name.endswith(".faiss"))
    )


def acquire_lock(directory: Path) -> int:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise IndexLockedError(
            f"index {directory} is locked by another bt-search index run (pid {holder}); wait for it to finish"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_lock(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.close(fd)  # closing the last descriptor of the open file releases the flock
