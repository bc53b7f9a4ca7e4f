"""scan -> decode (worker processes, decoding.py) -> image tower -> store, incremental and resumable.

Embeddings are committed to the index as atomic segments every COMMIT_ROWS rows (or COMMIT_SECONDS), so a
crash or Ctrl-C loses at most that much, and a re-run skips everything committed (same size and mtime, or
same content hash). Files that failed before and have not changed since are not retried.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from . import config
from .decoding import Decoded, decoded_batches
from .model import BridgeTowerEngine
from .scan import FileRecord, ScanProblem, scan
from .store import FailedRow, ImageRow, IndexWriter


class IndexProgress:
    """Progress callbacks; the CLI subclasses this to draw a bar. The defaults do nothing."""

    def started(self, to_embed: int, unchanged: int) -> None: ...

    def advanced(self, count: int) -> None: ...

    def skipped(self, path: str, reason: str) -> None: ...


@dataclass
class IndexReport:
    indexed: int = 0
    unchanged: int = 0
    failed_before: int = 0  # files that failed on an earlier run and were not retried (unchanged since)
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    total_images: int = 0


COMMIT_ROWS = 256  # rows per crash-safe commit: fewer segments to merge, at most this much redone after a crash
COMMIT_SECONDS = 30.0  # ... or this much time, whichever comes first


@dataclass
class Plan:
    """What a run must do with the scanned files."""

    to_embed: list[FileRecord]
    unchanged: int
    touched: list[tuple[FileRecord, str]]  # same content under a new mtime: (record, sha256), metadata only
    failed_before: int  # failed on an earlier run and not modified since: not retried


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def vanished(known: Iterable[str], seen: set[str], roots: Sequence[str]) -> list[str]:
    """Indexed paths under the scanned roots that the scan no longer found."""
    prefixes = tuple(root if root.endswith(os.sep) else root + os.sep for root in roots)
    return sorted(p for p in known if p not in seen and (p in roots or p.startswith(prefixes)))


def index_paths(
    roots: Sequence[str | os.PathLike],
    writer: IndexWriter,
    engine: BridgeTowerEngine,
    *,
    batch_size: int = 16,
    workers: int | None = None,
    draft: bool = True,
    prune: bool = False,
    index_type: str | None = None,
    commit_rows: int = COMMIT_ROWS,
    progress: IndexProgress | None = None,
) -> IndexReport:
    """Bring the index up to date with `roots`. Committed work survives any interruption.

    `workers` decode processes (None: `config.default_workers` for the engine's device; 0: inline).
    """
    if workers is None:
        workers = config.default_workers(engine.device.type)
    progress = progress or IndexProgress()
    started = time.perf_counter()
    report = IndexReport()
    records, problems = _scan(roots, skip=[writer.directory])
    for problem in problems:
        report.skipped.append((problem.path, problem.reason))
        progress.skipped(problem.path, problem.reason)
    known = writer.known_files(r.path for r in records)  # lookups for the scanned paths only
    work = plan(records, known, writer.known_failures())
    report.unchanged, report.failed_before = work.unchanged, work.failed_before
    absolute_roots = [os.path.abspath(r) for r in roots]
    gone = vanished(writer.paths_under(absolute_roots), {r.path for r in records}, absolute_roots) if prune else []
    progress.started(len(work.to_embed), work.unchanged)

    pending = PendingCommit(writer, commit_rows)
    pending.add(_refreshed_rows(writer, work.touched), [FailedRow(p.path, p.reason, 0, 0) for p in problems])
    by_path = {record.path: record for record in work.to_embed}
    with torch_threads(config.parent_torch_threads(engine.device.type, workers)):
        for batch, batch_failures in decoded_batches(work.to_embed, engine.preprocessing, batch_size, workers, draft):
            for path, reason in batch_failures:
                report.skipped.append((path, reason))
                progress.skipped(path, reason)
            rows = _embed(engine, batch)
            pending.add(rows, [FailedRow(path, reason, by_path[path].size, by_path[path].mtime_ns) for path, reason in batch_failures])
            report.indexed += len(rows)
            progress.advanced(len(rows) + len(batch_failures))
    pending.flush(removed=gone)
    stats = writer.finish(index_type=index_type)
    report.removed = len(gone)
    report.total_images = stats.images
    report.seconds = time.perf_counter() - started
    return report


class PendingCommit:
    """Rows and failures waiting for the next atomic commit: every `rows` rows or COMMIT_SECONDS."""

    def __init__(self, writer: IndexWriter, rows: int):
        self.writer, self.limit = writer, max(1, rows)
        self.rows: list[ImageRow] = []
        self.failed: list[FailedRow] = []
        self.since = time.monotonic()

    def add(self, rows: list[ImageRow], failed: list[FailedRow]) -> None:
        self.rows += rows
        self.failed += failed
        if len(self.rows) >= self.limit or time.monotonic() - self.since >= COMMIT_SECONDS:
            self.flush()

    def flush(self, removed: Sequence[str] = ()) -> None:
        if self.rows or self.failed or removed:
            self.writer.commit(self.rows, failed=self.failed, removed=removed)
        self.rows, self.failed, self.since = [], [], time.monotonic()


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` torch CPU threads (None: unchanged), then restore the previous count."""
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
    stored = writer.rows_by_sha256(sha for _, sha in touched)
    return [
        replace(stored[sha], path=record.path, size=record.size, mtime_ns=record.mtime_ns)
        for record, sha in touched
        if sha in stored
    ]


def _scan(roots, skip) -> tuple[list[FileRecord], list[ScanProblem]]:
    records, problems = [], []
    for item in scan(roots, skip=skip):
        (records if isinstance(item, FileRecord) else problems).append(item)
    return records, problems


def _embed(engine: BridgeTowerEngine, batch: list[Decoded]) -> list[ImageRow]:
    if not batch:
        return []
    embeddings = engine.encode_images(np.stack([d.pixels for d in batch]))
    return [
        ImageRow(
            path=d.record.path,
            size=d.record.size,
            mtime_ns=d.record.mtime_ns,
            sha256=d.sha256,
            width=d.width,
            height=d.height,
            embedding=embedding,
        )
        for d, embedding in zip(batch, embeddings)
    ]


def identity_for(engine: BridgeTowerEngine):
    """The index identity an engine writes: model, revision, embedding size, preprocessing."""
    from .store import IndexIdentity

    return IndexIdentity(
        model=engine.model_id,
        model_revision=engine.revision,
        embedding_dim=engine.embedding_dim,
        preprocessing=engine.preprocessing.as_dict(),
        embedding_fingerprint=engine.embedding_fingerprint(),
    )

