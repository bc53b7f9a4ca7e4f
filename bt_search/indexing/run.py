"""scan -> decode (worker processes, decoding.py) -> image tower -> store, incremental and resumable.

Embeddings are committed to the index as atomic segments every COMMIT_ROWS rows (or COMMIT_SECONDS), so a
crash or Ctrl-C loses at most that much, and a re-run skips everything committed (same size and mtime, or
same content hash). Files that failed before and have not changed since are not retried.

A run never drops an indexed row because its file could not be read this time (an unmounted drive, a
permission, a half-written file): the row keeps its embedding and the run reports it in `kept`. Only
`prune` removes rows, and only of files the scan positively saw gone from a folder it listed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from bt_search import config
from bt_search.engine.naming import model_name
from bt_search.engine.weights import check_model_path
from bt_search.indexing.progress import IndexProgress, TqdmProgress
from bt_search.indexing.roots import ROOTS_SETTING, merged_roots, recorded_roots
from bt_search.media.decoding import Decoded, decoded_batches
from bt_search.media.exif import read_capture
from bt_search.media.file_reading import file_sha256
from bt_search.media.scan import FileRecord, Listing, ScanProblem, canonical_path, scan, split_missing
from bt_search.media.scan_rules import ScanRules
from bt_search.media.video import VideoSampling
from bt_search.store import FailedRow, ImageRow, IndexIdentity, IndexWriter

if TYPE_CHECKING:  # torch loads with the model, not with this module (the Ray driver never loads it)
    from bt_search.engine.model import BridgeTowerEngine


@dataclass
class IndexReport:
    indexed: int = 0
    unchanged: int = 0
    failed_before: int = 0  # files that failed on an earlier run and were not retried (unchanged since)
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # not indexed: (path, reason)
    kept: list[tuple[str, str]] = field(default_factory=list)  # indexed earlier, unreadable this run: row kept
    seconds: float = 0.0
    total_images: int = 0
    found: int = 0  # image files the scan found under the roots (new, changed or not)
    unread_roots: list[str] = field(default_factory=list)  # roots given that could not be read at all
    gone: int = 0  # without `prune`: indexed files under the roots that the scan saw gone (rows kept)


COMMIT_ROWS = 256  # rows per crash-safe commit: fewer segments to merge, at most this much redone after a crash
COMMIT_SECONDS = 30.0  # ... or this much time, whichever comes first


@dataclass
class Plan:
    """What a run must do with the scanned files."""

    to_embed: list[FileRecord]
    unchanged: int
    touched: list[tuple[FileRecord, str]]  # same content under a new mtime: (record, sha256), metadata only
    failed_before: int  # failed on an earlier run and not modified since: not retried


def plan(
    records: Iterable[FileRecord],
    known: dict[str, tuple[int, int, str]],
    known_failures: dict[str, tuple[int, int]] | None = None,
) -> Plan:
    """Sort scanned files: unchanged (same size+mtime, else same content hash), known failures, or to embed."""
    known_failures = known_failures or {}
    result = Plan([], 0, [], 0)
    for record in records:
        previous = known.get(record.path)
        if previous is None:
            if known_failures.get(record.path) == (record.size, record.mtime_ns):
                result.failed_before += 1
            else:
                result.to_embed.append(record)
        elif previous[:2] == (record.size, record.mtime_ns):
            result.unchanged += 1
        elif (sha256 := _sha256_or_none(record.path)) == previous[2]:
            result.unchanged += 1
            result.touched.append((record, sha256))
        else:
            result.to_embed.append(record)
    return result


def _sha256_or_none(path: str) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def vanished(known: Iterable[str], seen: set[str], listed: Listing) -> list[str]:
    """Indexed paths the scan positively saw gone: the nearest folder above each that was listed lacks
    the next name on the way to it. A path under a folder that could not be listed is never gone."""
    return sorted(p for p in known if p not in seen and _missing_from_listing(p, listed))


def _missing_from_listing(path: str, listed: Listing) -> bool:
    child, folder = path, os.path.dirname(path)
    while folder != child:
        names = listed.get(folder)
        if names is not None:
            return os.path.basename(child) not in names
        child, folder = folder, os.path.dirname(folder)
    return False  # no folder above it was listed: outside this scan


def index_paths(
    roots: Sequence[str | os.PathLike],
    writer: IndexWriter,
    engine: BridgeTowerEngine | Callable[[], BridgeTowerEngine],
    *,
    batch_size: int = 16,
    workers: int | None = None,
    draft: bool = True,
    prune: bool = False,
    index_type: str | None = None,
    commit_rows: int = COMMIT_ROWS,
    progress: IndexProgress | bool | None = None,
    rules: ScanRules | None = None,
    prune_excluded: bool = False,
    list_entries: Sequence[str] = (),
    folders: Sequence[str] = (),
    video: VideoSampling | None = None,
) -> IndexReport:
    """Bring the index up to date with `roots`. Committed work survives any interruption.

    A video becomes a row per kept frame (`video`: how frames are sampled, None: the defaults; media/video.py),
    committed and replaced as a unit.

    `list_entries` (paths read from a source list) are indexed like `roots`, except that one that does not
    exist becomes a failed row instead of stopping the run.

    `engine` may be a callable that loads one: it is called only when some file is to be embedded, so a run
    with nothing new costs a scan and no model. Either way the engine is checked against `writer.identity`
    (ModelMismatchError) before the run writes anything.

    `workers` decode processes (None: `config.default_workers` for the engine's device; 0: inline).
    `rules`: what the scan leaves out (None: the rules recorded by earlier runs, else the defaults); they are
    recorded for later runs. `--prune` keeps files that still exist but the rules now leave out, unless
    `prune_excluded`. `progress=True` draws a `tqdm.auto` bar (a widget in notebooks).

    `folders` are brought up to date without their subfolders (one listing each; a watcher's changed folders):
    with `prune`, what they no longer hold is pruned, whole subfolders included.
    """
    progress = _progress(progress)
    run = IndexRun.begin(writer, progress, commit_rows, rules)
    listed: Listing = {}
    present, missing = split_missing(list_entries)
    records, problems = _scan(
        [*roots, *present], skip=[writer.directory], listed=listed, rules=run.rules, folders=folders
    )
    loaded: list[BridgeTowerEngine] = []

    def load_if_needed(work: Plan) -> None:
        if work.to_embed:
            loaded.append(checked_engine(engine, writer))

    work = run.plan(
        records,
        [*missing, *problems],
        listed,
        [*roots, *list_entries, *folders],
        prune,
        prune_excluded,
        load_if_needed,
        given=[str(root) for root in roots],
    )
    if loaded:
        _embed_all(run, loaded[0], work.to_embed, batch_size, workers, draft, video)
    return run.finish(index_type)


def check_model_for_index(model: str, recorded: IndexIdentity | None, directory: str | os.PathLike) -> None:
    """Refuse, without loading it, a `model` whose path names no directory, or that is not the model the index
    at `directory` (identity `recorded`, None: no index yet) was built with (ModelMismatchError, as the
    writer would refuse it once loaded)."""
    check_model_path(model, built=directory if recorded is not None and model == recorded.model else None)
    if recorded is not None and model_name(model) != recorded.model:
        recorded.require_compatible(replace(recorded, model=model_name(model)), directory)


def checked_engine(engine: BridgeTowerEngine | Callable[[], BridgeTowerEngine], writer: IndexWriter):
    """`engine` (loaded now if it is a loader), refused with ModelMismatchError unless it writes the index's
    identity."""
    engine = engine() if callable(engine) else engine
    writer.identity.require_compatible(IndexIdentity.of(engine), writer.directory)
    return engine


def _embed_all(
    run: IndexRun, engine, to_embed: list[FileRecord], batch_size: int, workers, draft: bool, video=None
) -> None:
    if workers is None:
        workers = config.default_workers(engine.device.type)
    by_path = {record.path: record for record in to_embed}
    with torch_threads(config.parent_torch_threads(engine.device.type, workers)):
        batches = decoded_batches(to_embed, engine.preprocessing, batch_size, workers, draft, video)
        for batch, batch_failures in batches:
            stamped = [(path, reason, by_path[path].size, by_path[path].mtime_ns) for path, reason in batch_failures]
            run.add(_embed(engine, batch, batch_size), stamped)


class IndexRun:
    """What every executor shares: scan rules, the plan against the index, failures, commits, prune, finish.

    The local indexer and the Ray pipeline differ only in how they turn `plan().to_embed` into rows.
    """

    def __init__(self, writer: IndexWriter, progress: IndexProgress, commit_rows: int, rules: ScanRules):
        self.writer, self.progress, self.rules = writer, progress, rules
        self.report = IndexReport()
        self.pending = PendingCommit(writer, commit_rows)
        self.failures = Failures({}, self.report, progress)
        self.gone: list[str] = []
        self.started = time.perf_counter()

    @classmethod
    def begin(cls, writer: IndexWriter, progress: IndexProgress, commit_rows: int, rules: ScanRules | None) -> IndexRun:
        """Start a run; `rules` None means the rules recorded by earlier runs (else the defaults). Nothing is
        written before `plan`."""
        rules = rules or ScanRules.from_settings(writer.settings.get("scan_rules"))
        return cls(writer, progress, commit_rows, rules)

    def plan(
        self,
        records,
        problems,
        listed: Listing,
        roots,
        prune: bool,
        prune_excluded: bool = False,
        before_writes: Callable[[Plan], None] | None = None,
        given: Sequence[str] | None = None,
    ) -> Plan:
        """Plan the run against the index; record the scan rules, scan problems and refreshed rows; choose what to
        prune. `before_writes(plan)` runs once the plan is known and before the run's first write (the local
        run loads and checks its model there, only when there is something to embed). `given`: the roots the
        caller named (not a source list's entries), reported in `unread_roots` when unreadable (None: `roots`)."""
        writer, report = self.writer, self.report
        seen = {r.path for r in records} | {p.path for p in problems}
        known = writer.known_files(seen)  # lookups for the scanned paths only, not the whole index
        failed = writer.known_failures()
        self.failures = Failures(known, report, self.progress)
        work = plan(records, known, failed)
        report.unchanged, report.failed_before = work.unchanged, work.failed_before
        canonical_roots = [r if "://" in r else canonical_path(r) for r in map(str, roots)]
        report.found = len(records)
        named = canonical_roots if given is None else [canonical_path(r) for r in map(str, given) if "://" not in r]
        report.unread_roots = sorted({p.path for p in problems} & set(named))
        if prune:
            candidates = [*writer.paths_under(canonical_roots), *failed]
            self.gone = _pruned(candidates, seen, listed, roots, self.rules, prune_excluded)
        elif writer.count_under(canonical_roots) > len(known):
            # Some indexed file under the roots was not seen: say how many are gone, so --prune can be offered.
            # Counting first keeps the common case (nothing missing) free of a Python object per indexed row.
            report.gone = len(vanished(writer.paths_under(canonical_roots), seen, listed))
        if before_writes is not None:
            before_writes(work)
        folders = [root for root in named if os.path.isdir(root)]
        roots_now = merged_roots(recorded_roots(writer.settings), folders)
        writer.record_settings(scan_rules=self.rules.as_settings(), **{ROOTS_SETTING: roots_now})
        self.progress.started(len(work.to_embed), work.unchanged)
        self.pending.add(
            _refreshed_rows(writer, work.touched), self.failures.to_record([(p.path, p.reason, 0, 0) for p in problems])
        )
        busy = {r.path for r in work.to_embed} | {r.path for r, _ in work.touched} | {p.path for p in problems}
        _capture_upgrade(writer, self.pending, busy)
        return work

    def add(self, rows: list[ImageRow], failures: list[tuple[str, str, int, int]]) -> None:
        """Embedded rows and (path, reason, size, mtime_ns) failures of one batch. A video's rows (its frames) come
        in one call."""
        self.pending.add(rows, self.failures.to_record(failures))
        files = len({row.path for row in rows})
        self.report.indexed += files
        self.progress.advanced(files + len(failures))

    def finish(self, index_type: str) -> IndexReport:
        self.pending.flush(removed=self.gone)
        stats = self.writer.finish(index_type=index_type)
        self.report.removed = len(self.gone)
        self.report.total_images = stats.images
        self.report.seconds = time.perf_counter() - self.started
        return self.report


class Failures:
    """Sorts files that could not be indexed: new ones are recorded as failed rows; an indexed file keeps
    its row (and embedding) and is reported as unreadable this run, whatever the reason."""

    def __init__(self, known: dict[str, tuple[int, int, str]], report: IndexReport, progress: IndexProgress):
        self.known, self.report, self.progress = known, report, progress

    def to_record(self, failures: Iterable[tuple[str, str, int, int]]) -> list[FailedRow]:
        recorded = []
        for path, reason, size, mtime_ns in failures:
            if path in self.known:
                self.report.kept.append((path, reason))
                self.progress.skipped(path, f"{reason}; unreadable this run, its indexed row is kept")
            else:
                self.report.skipped.append((path, reason))
                self.progress.skipped(path, reason)
                recorded.append(FailedRow(path, reason, size, mtime_ns))
        return recorded


class PendingCommit:
    """Rows and failures waiting for the next atomic commit: every `rows` rows or COMMIT_SECONDS.

    Keyed by path, so one commit never names a path twice (the later entry for a path wins). A video's frames
    (the rows of one path in one `add`) are one entry: they are committed, and replace the video's rows, together.
    """

    def __init__(self, writer: IndexWriter, rows: int):
        self.writer, self.limit = writer, max(1, rows)
        self.entries: dict[str, list[ImageRow] | FailedRow] = {}
        self.since = time.monotonic()

    def add(self, rows: list[ImageRow], failed: list[FailedRow]) -> None:
        units: dict[str, list[ImageRow] | FailedRow] = {}
        for row in rows:
            units.setdefault(row.path, []).append(row)  # type: ignore[union-attr]
        units.update((failure.path, failure) for failure in failed)
        for path, entry in units.items():
            self.entries.pop(path, None)  # re-inserted last: the order of operations is kept
            self.entries[path] = entry
        if len(self.entries) >= self.limit or time.monotonic() - self.since >= COMMIT_SECONDS:
            self.flush()

    def flush(self, removed: Sequence[str] = ()) -> None:
        for path in removed:
            self.entries.pop(path, None)
        rows = [row for e in self.entries.values() if isinstance(e, list) for row in e]
        failed = [e for e in self.entries.values() if isinstance(e, FailedRow)]
        if rows or failed or removed:
            self.writer.commit(rows, failed=failed, removed=removed)
        self.entries, self.since = {}, time.monotonic()


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` torch CPU threads (None: unchanged), then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _refreshed_rows(writer: IndexWriter, touched: list[tuple[FileRecord, str]]) -> list[ImageRow]:
    """Rows of touched files with their new size/mtime, so the next run needs no hashing for them."""
    if not touched:
        return []
    stored = writer.row_sets_by_sha256(sha for _, sha in touched)
    refreshed = []
    for record, sha in touched:
        for row in stored.get(sha, []):  # a video: each of its frames
            capture = read_capture(record.path).as_fields() if row.frame_time is None else {}
            refreshed.append(replace(row, path=record.path, size=record.size, mtime_ns=record.mtime_ns, **capture))
    return refreshed


def _capture_upgrade(writer: IndexWriter, pending: PendingCommit, busy: set[str]) -> None:
    """Once per index: give rows indexed before capture info existed their EXIF columns, embeddings kept.

    O(N) header reads and one read of the stored rows, on the first run after the upgrade only (then the
    manifest says capture info is present). Paths this run embeds or refreshes anyway are left to it.
    """
    if writer.settings.get("capture_info"):
        return
    known = {path: entry for path, entry in writer.known_files().items() if path not in busy}
    stored = writer.rows_by_sha256(sha for _, _, sha in known.values())
    for path, (size, mtime_ns, sha) in known.items():
        if sha in stored and os.path.isfile(path):
            row = replace(stored[sha], path=path, size=size, mtime_ns=mtime_ns, **read_capture(path).as_fields())
            pending.add([row], [])
    pending.flush()
    writer.record_settings(capture_info=True)


def _pruned(known, seen: set[str], listed: Listing, roots, rules: ScanRules, prune_excluded: bool) -> list[str]:
    """Paths the scan positively saw gone; with `prune_excluded`, also files the scan rules now leave out
    (they are still in their folder's listing, so `vanished` alone keeps them)."""
    gone = set(vanished(known, seen, listed))
    if prune_excluded:
        absolute = [canonical_path(r) for r in roots]
        gone.update(p for p in known if p not in seen and rules.covers(p, absolute))
    return sorted(gone)


def _progress(progress: IndexProgress | bool | None) -> IndexProgress:
    if progress is True:
        return TqdmProgress()
    return progress or IndexProgress()


def _scan(
    roots, skip, listed: Listing, rules: ScanRules, folders: Sequence[str] = ()
) -> tuple[list[FileRecord], list[ScanProblem]]:
    records, problems = [], []
    for item in scan(roots, skip=skip, listed=listed, rules=rules, folders=folders):
        (records if isinstance(item, FileRecord) else problems).append(item)
    return records, problems


def _embed(engine: BridgeTowerEngine, batch: list[Decoded], batch_size: int = 16) -> list[ImageRow]:
    """Rows of a decoded batch: one per image, one per kept frame of a video (embedded `batch_size` at a time)."""
    frames = [(d, pixels, time) for d in batch for pixels, time in d.frames()]
    if not frames:
        return []
    step = max(1, batch_size)
    embeddings = np.concatenate(
        [engine.encode_images(np.stack([p for _, p, _ in frames[i : i + step]])) for i in range(0, len(frames), step)]
    )
    return [
        ImageRow(
            path=d.record.path,
            size=d.record.size,
            mtime_ns=d.record.mtime_ns,
            sha256=d.sha256,
            width=d.width,
            height=d.height,
            embedding=embedding,
            **d.capture.as_fields(),
            frame_time=time,
        )
        for (d, _, time), embedding in zip(frames, embeddings)
    ]
