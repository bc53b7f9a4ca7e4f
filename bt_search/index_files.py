"""The index directory's files: names, schemas, atomic writes, manifest, pending segments, writer lock.

`store.py` builds the public reader/writer on top of this; docs/format.md describes the layout.
Every file is written to a temporary name in its final directory, fsynced and renamed over the
target, so a reader (or a process killed at any moment) sees either the old file or the new one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import IndexFormatError, IndexLockedError, UsageError

FORMAT_VERSION = 1

MANIFEST_FILE = "manifest.json"
IMAGES_FILE = "images.parquet"
FAILED_FILE = "failed.parquet"
PENDING_DIR = "pending"
LOCK_FILE = "lock"
GENERATION_KEY = b"bt_search.generation"  # Parquet schema metadata of images.parquet
TMP_SUFFIX = ".tmp"

OP_IMAGE, OP_FAILED, OP_REMOVED = "image", "failed", "removed"

CAPTURE_COLUMNS = ["taken_at", "camera_make", "camera_model"]  # nullable; absent from files of older runs
IMAGE_META_COLUMNS = ["path", "size", "mtime_ns", "sha256", "width", "height", *CAPTURE_COLUMNS]
FAILED_COLUMNS = ["path", "reason", "size", "mtime_ns"]
FAILED_SCHEMA = pa.schema(
    [("path", pa.string()), ("reason", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64())]
)
# A segment row is one operation on one path; columns an operation does not use are null.
OPS_META_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("op", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("reason", pa.string()),
        ("taken_at", pa.string()),
        ("camera_make", pa.string()),
        ("camera_model", pa.string()),
    ]
)
_SEGMENT_NAME = re.compile(r"seg-(\d+)\.parquet")


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def images_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [(name, OPS_META_SCHEMA.field(name).type) for name in IMAGE_META_COLUMNS] + [("embedding", embedding_type(dim))]
    )


def segment_schema(dim: int) -> pa.Schema:
    return OPS_META_SCHEMA.append(pa.field("embedding", embedding_type(dim)))


def rebuild_hint(directory: Path) -> str:
    return f"rebuild it: delete {directory} and run `bt-search index PATH --index {directory}`"


# --- atomic writes -----------------------------------------------------------------------------


def atomic_write(target: Path, write: Callable[[str], None]) -> None:
    """Run `write(tmp_path)`, then make the result durable and visible at `target` in one rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        write(str(tmp))
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(target.parent)  # the rename itself must survive a power cut


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet(table: pa.Table, target: Path) -> None:
    atomic_write(target, lambda tmp: pq.write_table(table, tmp))


def remove_tmp_files(directory: Path) -> None:
    """Delete leftovers of writes interrupted by a crash (call only while holding the writer lock)."""
    for folder in (directory, directory / PENDING_DIR):
        for leftover in folder.glob(f".*{TMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)


# --- manifest ----------------------------------------------------------------------------------

_MANIFEST_KEYS = ("format_version", "model", "model_revision", "embedding_dim", "preprocessing")


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest, or None when there is none; IndexFormatError when damaged or of another version."""
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path} cannot be read ({exc}); {rebuild_hint(directory)}") from exc
    if not isinstance(manifest, dict) or any(key not in manifest for key in _MANIFEST_KEYS):
        raise IndexFormatError(f"{path} is damaged (missing fields); {rebuild_hint(directory)}")
    version = manifest["format_version"]
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"index {directory} has format version {version!r}, this bt-search reads version "
            f"{FORMAT_VERSION}; use the bt-search that wrote it, or {rebuild_hint(directory)}"
        )
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    atomic_write(directory / MANIFEST_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# --- pending segments --------------------------------------------------------------------------


def segment_paths(directory: Path) -> list[Path]:
    """Committed segments, oldest first (by sequence number, which orders their operations)."""
    numbered = []
    for path in (directory / PENDING_DIR).glob("seg-*.parquet"):
        match = _SEGMENT_NAME.fullmatch(path.name)
        if match:
            numbered.append((int(match.group(1)), path))
    return [path for _, path in sorted(numbered)]


def segment_number(path: Path) -> int:
    match = _SEGMENT_NAME.fullmatch(path.name)
    assert match, path
    return int(match.group(1))


def write_segment(directory: Path, number: int, table: pa.Table) -> None:
    pending = directory / PENDING_DIR
    pending.mkdir(exist_ok=True)
    write_parquet(table, pending / f"seg-{number:08d}.parquet")


# --- directory and writer lock -----------------------------------------------------------------


def prepare_directory(directory: Path) -> None:
    """Create the index directory, refusing to scatter index files into an unrelated folder."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file; give --index a directory")
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / MANIFEST_FILE).exists():
        foreign = [name for name in os.listdir(directory) if not _is_index_file_name(name)]
        if foreign:
            raise UsageError(
                f"{directory} is not empty and is not a bt-search index (it holds {foreign[0]!r}); "
                "give --index a new or empty directory"
            )


def _is_index_file_name(name: str) -> bool:
    return (
        name in (LOCK_FILE, PENDING_DIR, IMAGES_FILE, FAILED_FILE)
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
