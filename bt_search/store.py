"""The index directory: a locked, crash-safe writer and a lock-free reader (layout: docs/format.md).

The writer appends each committed batch as one atomic segment in pending/; finish() compacts them
into images.parquet / failed.parquet, rebuilds the FAISS file and rewrites the manifest. Replaying
segments onto a state that already holds them changes nothing (last write per path wins), so a
crash between any two steps is repaired by the next finish(). Readers merge the same files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import __version__
from .errors import IndexMissingError
from .faiss_index import (
    INDEX_TYPES,
    build_faiss_index,
    choose_index_type,
    exact_search,
    read_faiss_index,
    search_index,
    write_faiss_index,
)
from .index_files import (
    FAILED_FILE,
    FORMAT_VERSION,
    IMAGES_FILE,
    acquire_lock,
    prepare_directory,
    read_manifest,
    release_lock,
    remove_tmp_files,
    segment_number,
    segment_paths,
    write_manifest,
    write_parquet,
    write_segment,
)
from .index_records import FailedRow, ImageRow, IndexIdentity, IndexStats, image_row, images_table, segment_table
from .index_snapshot import Snapshot, load_snapshot

__all__ = [
    "FORMAT_VERSION",
    "FailedRow",
    "ImageRow",
    "IndexIdentity",
    "IndexReader",
    "IndexStats",
    "IndexWriter",
    "build_faiss_index",
    "choose_index_type",
]


class IndexWriter:
    """The one writer of an index directory; holds its lock from open() to close()."""

    def __init__(self, directory: Path, manifest: dict[str, Any], lock_fd: int, snapshot: Snapshot):
        self.directory = directory
        self.identity = IndexIdentity.from_manifest(manifest)
        self._manifest = manifest
        self._lock_fd: int | None = lock_fd
        self._known = _keyed_by_path(snapshot.images, "size", "mtime_ns", "sha256")
        self._failures = _keyed_by_path(snapshot.failed, "size", "mtime_ns")
        existing = segment_paths(directory)
        self._next_segment = segment_number(existing[-1]) + 1 if existing else 1
        self._removed = 0
        self._content: tuple[Snapshot, dict[str, int]] | None = None

    @classmethod
    def open(cls, directory: str | os.PathLike[str], identity: IndexIdentity) -> IndexWriter:
        directory = Path(directory)
        prepare_directory(directory)
        lock_fd = acquire_lock(directory)
        try:
            manifest = read_manifest(directory)
            if manifest is None:
                manifest = _new_manifest(identity)
                write_manifest(directory, manifest)
            else:
                IndexIdentity.from_manifest(manifest).require_compatible(identity, directory)
            remove_tmp_files(directory)
            return cls(directory, manifest, lock_fd, load_snapshot(directory, manifest))
        except BaseException:
            release_lock(lock_fd)
            raise

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock. Committed segments stay; the next finish() compacts them."""
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None

    @property
    def settings(self) -> dict[str, Any]:
        """Choices recorded in the manifest that later runs reuse (index type, scan rules, ...)."""
        return dict(self._manifest.get("settings") or {})

    def record_settings(self, **settings: Any) -> None:
        """Record JSON-able choices in the manifest now (atomically), for later runs to reuse."""
        self._check_open()
        merged = {**self.settings, **settings}
        if merged != self.settings:
            self._manifest = {**self._manifest, "settings": merged}
            write_manifest(self.directory, self._manifest)

    def known_files(self) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, sha256) of every live image row, committed segments included."""
        return dict(self._known)

    def known_failures(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every file recorded as failed, committed segments included."""
        return dict(self._failures)

    def rows_by_sha256(self, sha256s: Iterable[str]) -> dict[str, ImageRow]:
        """One indexed row per given content hash that the index holds (under any path).

        Lets a moved or merely touched file reuse its embedding instead of running the model.
        Reads the whole index once per writer (the first call), so batch the lookups.
        """
        if self._content is None:
            snapshot = load_snapshot(self.directory, self._manifest)
            self._content = snapshot, {sha: i for i, sha in enumerate(_columns(snapshot.images, "sha256")[0])}
        snapshot, row_by_sha = self._content
        wanted = [sha for sha in dict.fromkeys(sha256s) if sha in row_by_sha]
        if not wanted:
            return {}
        embeddings = snapshot.embeddings()
        return {sha: image_row(snapshot.images, embeddings, row_by_sha[sha]) for sha in wanted}

    def commit(self, rows: Sequence[ImageRow], failed: Sequence[FailedRow] = (), removed: Sequence[str] = ()) -> None:
        """Durably record one batch as one atomic segment; a path may appear once per commit."""
        self._check_open()
        if not (rows or failed or removed):
            return
        table = segment_table(rows, failed, removed, self.identity.embedding_dim)
        write_segment(self.directory, self._next_segment, table)
        self._next_segment += 1
        self._remember(rows, failed, removed)

    def finish(self, index_type: str = "auto") -> IndexStats:
        """Compact the segments, rebuild the FAISS file, rewrite the manifest, then drop the segments."""
        self._check_open()
        if index_type != "auto" and index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {index_type!r}; expected auto, {', '.join(INDEX_TYPES)}")
        snapshot = load_snapshot(self.directory, self._manifest)
        n_images = snapshot.images.num_rows
        wanted_type = choose_index_type(n_images) if index_type == "auto" else index_type
        stats = IndexStats(images=n_images, failed=snapshot.failed.num_rows, removed=self._removed)
        if snapshot.pending_segments == 0 and self._is_current(snapshot, wanted_type):
            return stats
        generation = max(self._manifest["generation"], snapshot.generation) + 1
        embeddings = snapshot.embeddings()
        write_parquet(images_table(snapshot.images, embeddings, generation), self.directory / IMAGES_FILE)
        write_parquet(snapshot.failed, self.directory / FAILED_FILE)
        faiss_info = self._write_faiss_file(embeddings, wanted_type, generation)
        self._manifest = {
            **self._manifest,
            "index_type": wanted_type,
            "counts": {"images": stats.images, "failed": stats.failed},
            "generation": generation,
            "faiss": faiss_info,
            "updated": _now(),
            "tool_version": __version__,
        }
        write_manifest(self.directory, self._manifest)
        # Oldest first: whatever a crash leaves behind is a suffix of the log, which replays harmlessly.
        for segment in segment_paths(self.directory):
            segment.unlink()
        self._remove_stale_faiss_files(keep=faiss_info["file"] if faiss_info else None)
        return stats

    def _is_current(self, snapshot: Snapshot, wanted_type: str) -> bool:
        manifest = self._manifest
        return (
            manifest["generation"] > 0
            and snapshot.generation == manifest["generation"]
            and manifest["index_type"] == wanted_type
            and self._faiss_file_matches(_needs_faiss_file(wanted_type, snapshot.images.num_rows))
        )

    def _faiss_file_matches(self, needed: bool) -> bool:
        info = self._manifest["faiss"]
        if not needed:
            return info is None
        return info is not None and (self.directory / info["file"]).exists()

    def _write_faiss_file(self, embeddings: np.ndarray, index_type: str, generation: int) -> dict[str, Any] | None:
        if not _needs_faiss_file(index_type, len(embeddings)):
            return None
        name = f"images.{generation}.faiss"
        write_faiss_index(build_faiss_index(embeddings, index_type), self.directory / name)
        return {"file": name, "generation": generation, "rows": len(embeddings)}

    def _remove_stale_faiss_files(self, keep: str | None) -> None:
        for path in self.directory.glob("images.*.faiss"):
            if path.name != keep:
                path.unlink(missing_ok=True)

    def _remember(self, rows: Sequence[ImageRow], failed: Sequence[FailedRow], removed: Sequence[str]) -> None:
        for row in rows:
            self._failures.pop(row.path, None)
            self._known[row.path] = (row.size, row.mtime_ns, row.sha256)
        for failure in failed:
            self._known.pop(failure.path, None)
            self._failures[failure.path] = (failure.size, failure.mtime_ns)
        for path in removed:
            was_live = self._known.pop(path, None) is not None
            was_failed = self._failures.pop(path, None) is not None
            self._removed += was_live or was_failed

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"the writer for {self.directory} is closed")


class IndexReader:
    """A consistent view of an index as of open(); takes no lock, sees committed pending segments."""

    def __init__(self, directory: Path, manifest: dict[str, Any], snapshot: Snapshot):
        self.directory = directory
        self.manifest = manifest
        self.identity = IndexIdentity.from_manifest(manifest)
        self._snapshot = snapshot

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> IndexReader:
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest is None:
            hint = f"build one with `bt-search index PATH --index {directory}`"
            raise IndexMissingError(f"no index at {directory}; {hint}")
        return cls(directory, manifest, load_snapshot(directory, manifest))

    def __len__(self) -> int:
        return self._snapshot.images.num_rows

    @property
    def generation(self) -> int:
        """Changes whenever a run changes the index (readers and caches key on it)."""
        return int(self.manifest["generation"])

    @cached_property
    def paths(self) -> list[str]:
        """Row i's absolute path, for every row: O(N) Python strings, for tests and small tools only."""
        return self._snapshot.images.column("path").to_pylist()

    @cached_property
    def embeddings(self) -> np.ndarray:
        """[N, D] float32, row i = FAISS id i; read-only. O(N) memory: prefer embeddings_for()."""
        return self._snapshot.embeddings()

    def paths_for(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """The paths of rows `ids`, in that order (reads those rows only, where the store allows)."""
        column = self._snapshot.images.column("path")
        return column.take(pa.array(np.asarray(ids, dtype=np.int64))).to_pylist()

    def embeddings_for(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """[len(ids), D] float32 embeddings of rows `ids`, in that order."""
        return np.asarray(self.embeddings[np.asarray(ids, dtype=np.int64)])

    def ids_under(self, directory: str | os.PathLike[str]) -> np.ndarray:
        """Ascending row ids of the images inside `directory` (recursively)."""
        prefix = os.path.join(os.path.abspath(directory), "")
        inside = pc.starts_with(self._snapshot.images.column("path"), prefix)
        return np.flatnonzero(inside.to_numpy(zero_copy_only=False)).astype(np.int64)

    def ids_where(self, expression: pc.Expression) -> np.ndarray:
        """Ascending row ids of the live images matching `expression` over their columns (mtime_ns, taken_at, ...)."""
        images = self._snapshot.images
        numbered = images.append_column("_row_id", pa.array(np.arange(images.num_rows, dtype=np.int64)))
        return numbered.filter(expression).column("_row_id").to_numpy().astype(np.int64)

    def indexed_paths(self, paths: Iterable[str]) -> set[str]:
        """Those of `paths` that are live image rows."""
        wanted = pa.array(list(dict.fromkeys(paths)), pa.string())
        found = pc.is_in(wanted, value_set=self._snapshot.images.column("path").combine_chunks())
        return set(wanted.filter(found).to_pylist())

    def row(self, i: int) -> ImageRow:
        return image_row(self._snapshot.images, self.embeddings, i)

    def failed(self) -> list[FailedRow]:
        return [FailedRow(**record) for record in self._snapshot.failed.to_pylist()]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities [Q, k'], row ids [Q, k']) best first, with k' = min(k, len(self)); never -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        dim = self.identity.embedding_dim
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise ValueError(f"queries must have shape [Q, {dim}], got {list(queries.shape)}")
        k = min(k, len(self))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        index = self._faiss_index
        if index is None:
            return exact_search(self.embeddings, queries, k)
        similarities, ids = search_index(index, queries, k)
        incomplete = (ids < 0).any(axis=1)  # an approximate index can come back short
        if incomplete.any():
            similarities[incomplete], ids[incomplete] = exact_search(self.embeddings, queries[incomplete], k)
        return similarities, ids

    @property
    def uses_faiss_file(self) -> bool:
        """Whether search() uses the stored FAISS index (else an exact scan of the embeddings)."""
        return self._faiss_index is not None

    @cached_property
    def _faiss_index(self) -> Any:
        """The stored FAISS index when it matches exactly these rows, else None (search exactly)."""
        info = self.manifest.get("faiss")
        snapshot = self._snapshot
        if not info or snapshot.pending_segments or info["generation"] != snapshot.generation:
            return None
        index = read_faiss_index(self.directory / info["file"])
        if index is None or index.ntotal != len(self) or index.d != self.identity.embedding_dim:
            return None
        return index


def _needs_faiss_file(index_type: str, n_vectors: int) -> bool:
    return index_type != "flat" and n_vectors > 0  # exact search reads the embeddings themselves


def _columns(table: pa.Table, *names: str) -> list[list[Any]]:
    return [table.column(name).to_pylist() for name in names]


def _keyed_by_path(table: pa.Table, *names: str) -> dict[str, tuple[Any, ...]]:
    paths, *values = _columns(table, "path", *names)
    return dict(zip(paths, zip(*values, strict=True), strict=True))


def _new_manifest(identity: IndexIdentity) -> dict[str, Any]:
    now = _now()
    return {
        "format_version": FORMAT_VERSION,
        **identity.to_manifest(),
        "index_type": None,
        "counts": {"images": 0, "failed": 0},
        "generation": 0,
        "faiss": None,
        "created": now,
        "updated": now,
        "tool_version": __version__,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
