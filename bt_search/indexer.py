"""scan -> decode (worker processes) -> image tower -> store, incremental and resumable.

Each batch of embeddings is committed to the index as one atomic segment, so a crash or Ctrl-C loses at most
the batch in flight, and a re-run skips everything committed (same size and mtime, or same content hash).
Decoding runs in a pool of processes a bounded window ahead of the model, so it overlaps model compute
without piling decoded pixels up in memory.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import ImageDecodeError
from .images import Preprocessing, load_rgb, preprocess
from .model import BridgeTowerEngine
from .scan import FileRecord, ScanProblem, scan
from .store import FailedRow, ImageRow, IndexWriter

PREFETCH_BATCHES = 3  # decoded batches allowed in flight ahead of the model


class IndexProgress:
    """Progress callbacks; the CLI subclasses this to draw a bar. The defaults do nothing."""

    def started(self, to_embed: int, unchanged: int) -> None: ...

    def advanced(self, count: int) -> None: ...

    def skipped(self, path: str, reason: str) -> None: ...


@dataclass
class IndexReport:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    total_images: int = 0


@dataclass(frozen=True)
class Decoded:
    record: FileRecord
    pixels: np.ndarray
    width: int
    height: int
    sha256: str


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_record(record: FileRecord, prep: Preprocessing, draft: bool) -> Decoded | tuple[str, str]:
    """Worker job: read once, hash, decode, preprocess. A failure comes back as (path, reason), not raised."""
    try:
        with open(record.path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        return record.path, f"cannot read file ({err.strerror or err})"
    if not data:
        return record.path, "empty file"
    try:
        img, (width, height) = load_rgb(io.BytesIO(data), draft_for=prep if draft else None, name=record.path)
        pixels = preprocess(img, prep)
    except ImageDecodeError as err:
        return record.path, err.reason
    return Decoded(record, pixels, width, height, hashlib.sha256(data).hexdigest())


def plan(records: Iterable[FileRecord], known: dict[str, tuple[int, int, str]]) -> tuple[list[FileRecord], int]:
    """Split scanned files into (to embed, count unchanged). Unchanged: same size+mtime, else same content hash."""
    to_embed, unchanged = [], 0
    for record in records:
        previous = known.get(record.path)
        if previous is None:
            to_embed.append(record)
        elif previous[:2] == (record.size, record.mtime_ns) or _same_content(record, previous[2]):
            unchanged += 1
        else:
            to_embed.append(record)
    return to_embed, unchanged


def _same_content(record: FileRecord, known_sha256: str) -> bool:
    try:
        return file_sha256(record.path) == known_sha256
    except OSError:
        return False


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
    workers: int = 2,
    draft: bool = True,
    prune: bool = False,
    index_type: str = "auto",
    progress: IndexProgress | None = None,
) -> IndexReport:
    """Bring the index up to date with `roots`. Committed work survives any interruption."""
    progress = progress or IndexProgress()
    started = time.perf_counter()
    report = IndexReport()
    records, problems = _scan(roots, skip=[writer.directory])
    for problem in problems:
        report.skipped.append((problem.path, problem.reason))
        progress.skipped(problem.path, problem.reason)
    known = writer.known_files()
    to_embed, report.unchanged = plan(records, known)
    abs_roots = [os.path.abspath(r) for r in roots]
    gone = vanished(known, {r.path for r in records}, abs_roots) if prune else []
    progress.started(len(to_embed), report.unchanged)

    failed = [FailedRow(path=p.path, reason=p.reason, size=0, mtime_ns=0) for p in problems]
    for batch, batch_failures in _decoded_batches(to_embed, engine.preprocessing, batch_size, workers, draft):
        for path, reason in batch_failures:
            report.skipped.append((path, reason))
            progress.skipped(path, reason)
        failed += [_failed_row(path, reason, to_embed) for path, reason in batch_failures]
        rows = _embed(engine, batch)
        writer.commit(rows, failed=failed)
        failed = []
        report.indexed += len(rows)
        progress.advanced(len(rows) + len(batch_failures))
    writer.commit([], failed=failed, removed=gone)
    stats = writer.finish(index_type=index_type)
    report.removed = len(gone)
    report.total_images = stats.images
    report.seconds = time.perf_counter() - started
    return report


def _scan(roots, skip) -> tuple[list[FileRecord], list[ScanProblem]]:
    records, problems = [], []
    for item in scan(roots, skip=skip):
        (records if isinstance(item, FileRecord) else problems).append(item)
    return records, problems


def _failed_row(path: str, reason: str, records: Sequence[FileRecord]) -> FailedRow:
    record = next((r for r in records if r.path == path), None)
    return FailedRow(path=path, reason=reason, size=record.size if record else 0, mtime_ns=record.mtime_ns if record else 0)


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


def _decoded_batches(
    records: Sequence[FileRecord], prep: Preprocessing, batch_size: int, workers: int, draft: bool
) -> Iterator[tuple[list[Decoded], list[tuple[str, str]]]]:
    """Yield (decoded batch, failures in it), in input order, decoding up to a few batches ahead."""
    results = _decode_all(records, prep, workers, draft, window=batch_size * PREFETCH_BATCHES)
    batch, failures = [], []
    for result in results:
        if isinstance(result, Decoded):
            batch.append(result)
        else:
            failures.append(result)
        if len(batch) + len(failures) >= batch_size:
            yield batch, failures
            batch, failures = [], []
    if batch or failures:
        yield batch, failures


def _decode_all(records, prep, workers: int, draft: bool, window: int) -> Iterator[Decoded | tuple[str, str]]:
    if workers <= 0 or len(records) < 2:
        for record in records:
            yield decode_record(record, prep, draft)
        return
    # spawn, not fork: the parent holds torch's thread pools, which fork does not copy safely.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        try:
            yield from _windowed(pool, records, prep, draft, window)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _windowed(pool: Executor, records, prep, draft, window: int) -> Iterator[Decoded | tuple[str, str]]:
    pending: deque[Future] = deque()
    upcoming = iter(records)
    for record in upcoming:
        pending.append(pool.submit(decode_record, record, prep, draft))
        if len(pending) >= window:
            break
    while pending:
        result = pending.popleft().result()
        next_record = next(upcoming, None)
        if next_record is not None:
            pending.append(pool.submit(decode_record, next_record, prep, draft))
        yield result


def identity_for(engine: BridgeTowerEngine):
    """The index identity an engine writes: model, revision, embedding size, preprocessing."""
    from .store import IndexIdentity

    return IndexIdentity(
        model=engine.model_id,
        model_revision=engine.revision,
        embedding_dim=engine.embedding_dim,
        preprocessing=engine.preprocessing.as_dict(),
    )

