"""Keep an index current with its folders: file-system events (or polling), debounced into batches, each batch
run by `index_paths` as `index --prune` runs, on the changed folders only.

The guarantees are the indexer's own: every batch commits as it goes (a crash loses at most the rows not yet
committed, and the next batch or run redoes them), the writer lock is taken per batch and never stolen (while
a manual `index` holds it the watcher waits and says so; changes keep being collected meanwhile), the
recorded scan rules (hidden files, excludes) apply, and only what a listing positively saw gone is pruned.
The engine (or the loader that makes it once) is kept for the watcher's life.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bt_search import config
from bt_search.errors import BtSearchError, IndexFormatError, IndexLockedError, ModelMismatchError, UsageError
from bt_search.indexing.progress import IndexProgress
from bt_search.indexing.run import COMMIT_ROWS, IndexReport, index_paths
from bt_search.media.scan import canonical_path
from bt_search.media.scan_rules import ScanRules
from bt_search.media.video import VideoSampling
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from bt_search.store.files import MANIFEST_FILE
from bt_search.watch.changes import ADDED, DELETED, MODIFIED, targets
from bt_search.watch.filesystems import without_events
from bt_search.watch.status import WatchStatus

DEBOUNCE_MS = 1_600  # a burst (a folder copied in) is grouped for up to this long before its batch starts
STEP_MS = 100  # a batch starts once no change came for this long; also how often an idle watcher wakes
TIMEOUT_MS = 5_000
AUTO_POLL_SECONDS = 60.0  # polling interval where events are unavailable and no `poll` was given
LOCK_RETRY_SECONDS = 2.0
_KINDS = {1: ADDED, 2: MODIFIED, 3: DELETED}  # watchfiles.Change
Say = Callable[[str], None]


def require_watchfiles() -> None:
    """BtSearchError naming the extra when watchfiles is not installed (checked before any model loads)."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        raise BtSearchError(
            "watching folders needs the watch extra (watchfiles is missing): pip install 'bt-search[watch]'"
        ) from None


@dataclass(frozen=True)
class WatchOptions:
    poll: float | None = None  # seconds between polls; None: events, polling only where they are unavailable
    batch_size: int = config.DEFAULT_BATCH_SIZE
    workers: int | None = 0  # decode processes per batch (0: inline; None: the device's default)
    draft: bool = True
    commit_rows: int = COMMIT_ROWS
    debounce_ms: int = DEBOUNCE_MS
    lock_retry_s: float = LOCK_RETRY_SECONDS
    video: VideoSampling | None = None  # how videos' frames are sampled (None: the defaults; media/video.py)


class Watcher:
    """Follows `roots` and keeps the index at `index_dir` current: `start()` begins collecting changes,
    `catch_up()` brings the whole roots up to date, `run()` indexes changes batch by batch until `stop` is set
    (or Ctrl-C, from the main thread). `engine` is an engine or a loader (called once, when a file is first to
    be embedded); the index must exist."""

    def __init__(
        self,
        index_dir: str | os.PathLike[str],
        roots: Sequence[str | os.PathLike[str]],
        engine: Any,
        *,
        options: WatchOptions = WatchOptions(),
        status: WatchStatus | None = None,
        say: Say = lambda message: None,
        stop: threading.Event | None = None,
    ):
        require_watchfiles()
        self.index_dir = Path(index_dir)
        self.roots = watchable_roots(roots, say)
        self.engine = _once(engine) if callable(engine) else engine
        self.options = options
        self.status = status or WatchStatus()
        self.say = say
        self.stop = stop or threading.Event()
        self._notifier = None
        self._polling: float | None = None
        self._locked_said = False
        self._index_path = canonical_path(self.index_dir)
        self._rules: ScanRules | None = None  # the index's recorded rules, as of its last batch
        self._carried: set[tuple[str, str]] = set()  # changes of a batch that failed, for the next one
        self._catch_up_due = False  # a catch-up failed: the next batch catches up first

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        """Begin collecting changes under the roots (events, or polling where events are unavailable)."""
        poll = self.options.poll
        if poll is None and (remote := without_events(self.roots)):
            poll = AUTO_POLL_SECONDS
            self.say(f"{', '.join(remote)} on a network file system: polling every {poll:g} s (set `poll` to change)")
        self._open_notifier(poll)

    def catch_up(self) -> IndexReport | None:
        """Bring the whole roots up to date (changes made while nobody watched), pruning what is gone, except
        under a root that lists empty while images are indexed under it (an unmounted drive looks like that)."""
        return self._batch(None)

    def run(self) -> None:
        """Index changes as they come, until `stop` is set. KeyboardInterrupt on Ctrl-C (main thread)."""
        if self._notifier is None:
            self.start()
        while not self.stop.is_set():
            try:
                raw = self._notifier.watch(self.options.debounce_ms, STEP_MS, TIMEOUT_MS, self.stop)
            except RuntimeError as err:  # the event source failed (e.g. its queue overflowed): events were lost
                self.say(f"watching failed ({err}); watching again and catching up")
                self.close()
                self._open_notifier(self._polling)
                self._batch(None)
                continue
            if raw == "signal":
                raise KeyboardInterrupt
            if raw in ("stop", "timeout"):
                continue
            changes, self._carried = self._carried | {(_KINDS.get(kind, MODIFIED), path) for kind, path in raw}, set()
            if self._catch_up_due:
                self._catch_up_due = False
                self._batch(None)
            self._batch(changes)

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()
            self._notifier = None

    # ------------------------------------------------------------------ batches
    def _open_notifier(self, poll: float | None) -> None:
        from watchfiles._rust_notify import RustNotify  # watchfiles' documented low-level API

        def notifier(polling: bool):
            delay_ms = int((poll or AUTO_POLL_SECONDS) * 1000)
            return RustNotify(self.roots, False, polling, delay_ms, True, True)

        try:
            self._notifier, self._polling = notifier(poll is not None), poll
        except Exception as err:  # noqa: BLE001 - no events here (inotify limits, an odd file system): poll
            if poll is not None:
                raise
            self.say(f"file-system events are unavailable ({err}): polling every {AUTO_POLL_SECONDS:g} s instead")
            self._notifier, self._polling = notifier(True), AUTO_POLL_SECONDS
        mode = "events" if self._polling is None else f"polling every {self._polling:g} s"
        self.status.update(roots=tuple(self.roots), mode=mode)

    def _batch(self, changes: set[tuple[str, str]] | None) -> IndexReport | None:
        """One batch under the writer lock, waiting while another run holds it; None when there was nothing to do.
        `changes` None: the whole roots. Changes that ask nothing (the index's own files, hidden ones) are let go
        before the lock is taken: taking it writes the lock file, which may itself be under a watched root."""
        if changes is not None and not targets(changes, self.roots, self._known_rules(), skip=[self._index_path]):
            return None
        while not self.stop.is_set():
            if not (self.index_dir / MANIFEST_FILE).exists():
                self._failed(f"the index {self.index_dir} is gone; changes are not indexed until it is back", changes)
                return None
            try:
                report = self._locked_batch(changes)
            except IndexLockedError as err:
                if not self._locked_said:
                    self.say(f"waiting: {err}; retrying every {self.options.lock_retry_s:g} s")
                    self._locked_said = True
                self.status.update(waiting=str(err))
                self.stop.wait(self.options.lock_retry_s)
                continue
            except (ModelMismatchError, IndexFormatError):
                raise  # no later batch can do better
            except (BtSearchError, OSError) as err:  # disk full, a permission: the next change tries again
                self._failed(str(err), changes)
                return None
            self._locked_said = False
            return report
        return None

    def _locked_batch(self, changes: set[tuple[str, str]] | None) -> IndexReport | None:
        with IndexWriter.open(self.index_dir, lambda: IndexIdentity.of(self._engine())) as writer:
            self.status.update(waiting="")
            rules = self._rules = ScanRules.from_settings(writer.settings.get("scan_rules"))
            if changes is None:
                trees, folders = _mounted(self.roots, writer, self.say), ()
            else:
                work = targets(changes, self.roots, rules, skip=[self._index_path])
                trees, folders = work.trees, work.folders
            trees = [tree for tree in trees if os.path.isdir(tree)]  # gone since the change
            if not (trees or folders):
                return None
            progress = _StatusProgress(self.status, self.say)
            try:
                report = index_paths(
                    trees,
                    writer,
                    self.engine,
                    folders=folders,
                    prune=True,
                    progress=progress,
                    batch_size=self.options.batch_size,
                    workers=self.options.workers,
                    draft=self.options.draft,
                    commit_rows=self.options.commit_rows,
                    video=self.options.video,
                )
            finally:
                self.status.update(indexing=0, done=0)
        state = self.status.state
        summary = {"indexed": report.indexed, "removed": report.removed, "skipped": len(report.skipped)}
        summary["seconds"] = round(report.seconds, 3)
        self.status.update(batches=state.batches + 1, last_batch=summary, error="")
        if report.indexed or report.removed or report.skipped:
            self.say(
                f"{report.indexed} indexed, {report.removed} removed, {len(report.skipped)} skipped in "
                f"{report.seconds:.1f}s; {report.total_images} images"
            )
        return report

    def _known_rules(self) -> ScanRules:
        """The scan rules the index records (read once, then kept from each batch); until an index records
        some, none that leave anything out (a batch applies the recorded ones anyway)."""
        if self._rules is None:
            recorded = _recorded_settings(self.index_dir).get("scan_rules")
            if recorded is None:
                return ScanRules(include_hidden=True)
            self._rules = ScanRules.from_settings(recorded)
        return self._rules

    def _engine(self):
        return self.engine() if callable(self.engine) else self.engine

    def _failed(self, message: str, changes: set[tuple[str, str]] | None) -> None:
        """Say why a batch failed; its changes are carried into the next batch (a catch-up: into the next one's)."""
        self.say(f"watch batch failed: {message}")
        self.status.update(error=message)
        if changes is None:
            self._catch_up_due = True
        else:
            self._carried |= changes


def _recorded_settings(index_dir: Path) -> dict[str, Any]:
    """The index's recorded settings (scan rules, ...), read without a lock; none for an unreadable index."""
    try:
        return IndexReader.open(index_dir).manifest.get("settings") or {}
    except BtSearchError:
        return {}


def watchable_roots(roots: Sequence[str | os.PathLike[str]], say: Say) -> list[str]:
    """The folders among `roots`, canonical; UsageError when none is left to watch."""
    folders = []
    for root in roots:
        path = canonical_path(root)
        if os.path.isdir(path):
            folders.append(path)
        else:
            say(f"not watching {root}: {'not a folder' if os.path.exists(path) else 'it does not exist'}")
    if not folders:
        raise UsageError("no folder to watch: give `paths` folders (the index records the folders it was given)")
    return sorted(set(folders))


def _mounted(roots: list[str], writer: IndexWriter, say: Say) -> list[str]:
    """The roots to catch up: not one that lists empty while images are indexed under it (an unmounted drive's
    empty mount point would otherwise prune them all)."""
    kept = []
    for root in roots:
        try:
            empty = not os.listdir(root)
        except OSError:
            empty = False  # unreadable: the scan reports it and prunes nothing under it
        if empty and (count := writer.count_under([root])):
            say(f"{root} is empty but {count} images are indexed under it (unmounted?): not catching up there")
            continue
        kept.append(root)
    return kept


class _StatusProgress(IndexProgress):
    def __init__(self, status: WatchStatus, say: Say):
        self.status, self.say = status, say

    def started(self, to_embed: int, unchanged: int) -> None:
        self.status.update(indexing=to_embed, done=0)
        if to_embed:
            self.say(f"indexing {to_embed} new file{'' if to_embed == 1 else 's'}")

    def advanced(self, count: int) -> None:
        self.status.advanced(count)

    def skipped(self, path: str, reason: str) -> None:
        self.say(f"skipped {path!r}: {reason}")


def _once(loader: Callable[[], Any]) -> Callable[[], Any]:
    """`loader`, called at most once: the model is loaded for the first file to embed and kept."""
    loaded: list[Any] = []

    def engine():
        if not loaded:
            loaded.append(loader())
        return loaded[0]

    return engine


class SharedEngine:
    """An engine that a server's search thread also uses: each image batch takes `lock` (the one the searches
    take), so a search waits for one batch at most and the two never fight over the cores."""

    def __init__(self, engine: Any, lock: threading.Lock):
        self._engine, self._lock = engine, lock

    def encode_images(self, pixels):
        with self._lock:
            return self._engine.encode_images(pixels)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)
