"""The one writer of an index directory: appends parts, tombstones replaced rows, keeps the ANN file.

Every commit() writes its new files (a part, a tombstone file, a failure part), then a new manifest
naming them: the manifest's atomic rename is the commit point, so each commit is durable and visible
at once, and a crash before it leaves only orphans, which the next writer deletes. finish() compacts
(compaction.py), brings the ANN file up to date (ann_upkeep.py) and commits the result the same way.
Lookups read the parts through Arrow filters: no call builds a Python object per indexed row unless
it says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bt_search.errors import UsageError
from bt_search.store.ann.policy import normalise_choice
from bt_search.store.ann.upkeep import update_ann
from bt_search.store.capture_repair import REPAIRED_SETTING, parts_to_repair, repaired_part
from bt_search.store.compaction import compact, due_for_compaction, merge_failures, merge_tombstones
from bt_search.store.files import (
    META_COLUMNS,
    acquire_lock,
    prepare_directory,
    read_manifest,
    release_lock,
    remove_orphans,
    write_manifest,
    write_parquet,
)
from bt_search.store.manifest import advanced, file_name, live_count, new_manifest, part_entry
from bt_search.store.parts import open_snapshot
from bt_search.store.records import (
    FailedRow,
    ImageRow,
    IndexIdentity,
    IndexStats,
    check_commit_paths,
    failure_table,
    image_rows,
    part_table,
)
from bt_search.store.stored_paths import original_path, original_paths, stored_paths
from bt_search.store.v1.upgrade import upgrade_v1


class IndexWriter:
    """The one writer of an index directory; holds its lock from open() to close()."""

    def __init__(self, directory: Path, manifest: dict[str, Any], lock_fd: int):
        self.directory = directory
        self.identity = IndexIdentity.from_manifest(manifest)
        self._manifest = manifest
        self._lock_fd: int | None = lock_fd
        self._snapshot = open_snapshot(directory, manifest)
        self._failures = {
            original_path(record["path"]): (record["size"], record["mtime_ns"])
            for record in self._snapshot.failures().to_pylist()
        }
        self._removed = 0

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], identity: IndexIdentity | Callable[[], IndexIdentity]
    ) -> IndexWriter:
        """Open (or create) the index at `directory` for writing; upgrades a format 1 index in place.

        `identity` must fit an existing index, and names a new one's model. Given as a callable, it is called
        (after the lock is taken) only to create a new index: an existing one is opened with its own identity,
        and the caller checks any model against `writer.identity` before writing its embeddings, as
        `index_paths` does. So a re-run can take the lock and find nothing to do without loading a model.
        """
        directory = Path(directory)
        prepare_directory(directory)
        lock_fd = acquire_lock(directory)
        try:
            manifest = read_manifest(directory)
            if manifest is None:
                manifest = new_manifest(identity() if callable(identity) else identity)
                write_manifest(directory, manifest)
            else:
                if not callable(identity):
                    IndexIdentity.from_manifest(manifest).require_compatible(identity, directory)
                if manifest["format_version"] == 1:
                    manifest = upgrade_v1(directory, manifest)
            remove_orphans(directory, manifest)
            writer = cls(directory, manifest, lock_fd)
            writer._repair_nan_capture()
            return writer
        except BaseException:
            release_lock(lock_fd)
            raise

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock. Every commit is already durable and visible."""
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self._manifest)

    @property
    def settings(self) -> dict[str, Any]:
        """Choices recorded in the manifest that later runs reuse (scan rules, ...)."""
        return dict(self._manifest.get("settings") or {})

    def record_settings(self, **settings: Any) -> None:
        """Record JSON-able choices in the manifest now (atomically), for later runs to reuse."""
        self._check_open()
        merged = {**self.settings, **settings}
        if merged != self.settings:
            self._publish({**self._manifest, "settings": merged})

    # --- lookups ---------------------------------------------------------------------------------

    def known_files(self, paths: Iterable[str] | None = None) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, sha256) of the live image rows among `paths`.

        `paths=None` returns every live row: O(N) Python objects, for tests and small tools only.
        """
        table = self._rows_at(paths, ["path", "size", "mtime_ns", "sha256"])
        columns = [table.column(name).to_pylist() for name in ("path", "size", "mtime_ns", "sha256")]
        columns[0] = original_paths(columns[0])
        return {path: (size, mtime, sha) for path, size, mtime, sha in zip(*columns, strict=True)}

    def known_failures(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every file recorded as failed (failures are few: kept in memory)."""
        return dict(self._failures)

    def paths_under(self, roots: Sequence[str]) -> list[str]:
        """Live image paths equal to one of `roots` or inside one of them (for --prune), each once (a video's
        frames share its path)."""
        condition = _under(roots)
        if condition is None:
            return []
        column = self._snapshot.where(["path"], condition).column("path")
        return original_paths(pc.unique(column).to_pylist() if len(column) else [])

    def count_under(self, roots: Sequence[str]) -> int:
        """How many paths paths_under would return, without making a Python object per row."""
        condition = _under(roots)
        if condition is None:
            return 0
        return int(pc.count_distinct(self._snapshot.where(["path"], condition).column("path")).as_py())

    def rows_by_sha256(self, sha256s: Iterable[str]) -> dict[str, ImageRow]:
        """One indexed row per given content hash that the index holds (under any path).

        Lets a moved or merely touched file reuse its embedding instead of running the model.
        """
        wanted = list(dict.fromkeys(sha256s))
        if not wanted:
            return {}
        return {sha: rows[0] for sha, rows in self.row_sets_by_sha256(wanted).items()}

    def row_sets_by_sha256(self, sha256s: Iterable[str]) -> dict[str, list[ImageRow]]:
        """The rows of one indexed file per given content hash: one row for an image, each kept frame of a video
        (of the file with that content indexed first, in frame order)."""
        wanted = list(dict.fromkeys(sha256s))
        if not wanted:
            return {}
        table = self._snapshot.where(_ROW_COLUMNS, pc.field("sha256").isin(pa.array(wanted, pa.string())))
        found: dict[str, list[ImageRow]] = {}
        for sha, row in zip(table.column("sha256").to_pylist(), image_rows(table), strict=True):
            rows = found.setdefault(sha, [row])
            if rows[0] is not row and rows[0].path == row.path and row.frame_time is not None:
                rows.append(row)
        return {sha: sorted(rows, key=lambda row: row.frame_time or 0.0) for sha, rows in found.items()}

    def _rows_at(self, paths: Iterable[str] | None, columns: list[str]) -> pa.Table:
        if paths is None:
            return self._snapshot.where(columns)
        wanted = pa.array(stored_paths(dict.fromkeys(paths)), pa.string())
        return (
            self._snapshot.where(columns, pc.field("path").isin(wanted))
            if len(wanted)
            else self._snapshot.where(columns).slice(0, 0)
        )

    # --- writing ---------------------------------------------------------------------------------

    def commit(self, rows: Sequence[ImageRow], failed: Sequence[FailedRow] = (), removed: Sequence[str] = ()) -> None:
        """Durably and visibly record one batch (one atomic manifest update); a path may appear once."""
        self._check_open()
        paths = check_commit_paths(rows, failed, removed)
        if not paths:
            return
        manifest = self._manifest
        dim = self.identity.embedding_dim
        table = part_table(rows, manifest["next_row_id"], dim) if rows else None  # validates first
        replaced = self._rows_at(paths, ["row_id", "path"])
        cleared = [path for path in [row.path for row in rows] + list(removed) if path in self._failures]
        changes: dict[str, Any] = {}
        if table is not None:
            name = file_name(manifest, "part")
            write_parquet(table, self.directory / name)
            entry = part_entry(name, table.column("row_id").to_numpy(), level=0)
            changes["parts"] = [*manifest["parts"], entry]
            changes["next_row_id"] = manifest["next_row_id"] + len(rows)
        if replaced.num_rows:
            name = file_name(manifest, "tombstones")
            write_parquet(replaced.select(["row_id"]), self.directory / name)
            changes["tombstones"] = [*manifest["tombstones"], {"file": name, "rows": replaced.num_rows}]
        if failed or cleared:
            name = file_name(manifest, "failed")
            write_parquet(failure_table(failed, cleared), self.directory / name)
            changes["failed_parts"] = [*manifest["failed_parts"], {"file": name, "rows": len(failed) + len(cleared)}]
        removed_set = set(removed)
        self._removed += len(removed_set & set(original_paths(replaced.column("path").to_pylist())))
        self._removed += sum(path in self._failures for path in removed)
        for path in [row.path for row in rows] + list(removed):
            self._failures.pop(path, None)
        for failure in failed:
            self._failures[failure.path] = (failure.size, failure.mtime_ns)
        self._publish(advanced(manifest, **changes))
        if due_for_compaction(self._manifest):  # keeps a long run's part count O(log N)
            self._publish(advanced(compact(self.directory, self._manifest, self._snapshot)))

    def finish(self, index_type: str | None = None, memory_budget: int | None = None) -> IndexStats:
        """Compact, bring the ANN file up to date, commit.

        `index_type` ("auto", "flat", "hnsw", "ivf_flat", "ivf_sq8", "ivf_pq") and `memory_budget` (bytes the ANN
        index may take) are recorded and kept by later runs until given again; None keeps the recorded
        ones (else auto, and $BT_SEARCH_MEMORY_BUDGET or 1 GiB).
        """
        self._check_open()
        manifest = _with_ann_choice(self._manifest, index_type, memory_budget)
        snapshot = self._snapshot
        for step in (compact, merge_tombstones, merge_failures, update_ann):
            manifest = step(self.directory, manifest, snapshot)
            snapshot = open_snapshot(self.directory, manifest, snapshot)
        if manifest != self._manifest:
            self._publish(advanced(manifest))
        remove_orphans(self.directory, self._manifest)
        return IndexStats(images=self._manifest["counts"]["images"], failed=len(self._failures), removed=self._removed)

    def choose_ann(self, index_type: str | None = None, memory_budget: int | None = None) -> None:
        """Record the ANN index type and memory budget now, as finish() would (None keeps the recorded one)."""
        self._check_open()
        manifest = _with_ann_choice(self._manifest, index_type, memory_budget)
        if manifest != self._manifest:
            self._publish(advanced(manifest))

    def _repair_nan_capture(self) -> None:
        """Once per index: null the "nan" capture values an older Ray run stored (capture_repair.py). Only
        indexes with capture info can hold them."""
        if not self.settings.get("capture_info") or self.settings.get(REPAIRED_SETTING):
            return
        for position in parts_to_repair(self._snapshot):  # a rewritten part keeps its place in the list
            self._publish(advanced(repaired_part(self.directory, self._manifest, self._snapshot, position)))
        self.record_settings(**{REPAIRED_SETTING: True})

    def _publish(self, manifest: dict[str, Any]) -> None:
        """Commit `manifest` (its files are written): counts refreshed, then the atomic rename."""
        snapshot = open_snapshot(self.directory, manifest, self._snapshot)
        counts = {"images": live_count(manifest, len(snapshot.dead)), "failed": len(self._failures)}
        manifest = {**manifest, "counts": counts}
        write_manifest(self.directory, manifest)
        self._manifest, self._snapshot = manifest, snapshot

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"the writer for {self.directory} is closed")


_ROW_COLUMNS = [*META_COLUMNS, "embedding"]


def _with_ann_choice(manifest: dict[str, Any], index_type: str | None, memory_budget: int | None) -> dict[str, Any]:
    manifest = dict(manifest)
    if index_type is not None:
        manifest["index_choice"] = normalise_choice(index_type)
    if memory_budget is not None:
        if memory_budget <= 0:
            raise UsageError(f"the memory budget must be positive, not {memory_budget}")
        manifest["memory_budget"] = int(memory_budget)
    return manifest


def _under(roots: Sequence[str]):
    """The filter for paths equal to one of `roots` or inside one of them (None: no roots)."""
    condition = None
    for root in stored_paths(roots):
        prefix = root if root.endswith(os.sep) else root + os.sep
        term = (pc.field("path") == root) | pc.starts_with(pc.field("path"), prefix)
        condition = term if condition is None else condition | term
    return condition
