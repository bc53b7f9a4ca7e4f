"""Decode stage: files -> preprocessed pixels, in worker processes a bounded window ahead of the model.

This module imports only numpy and Pillow (through images.py), so spawned workers start in a fraction of a
second instead of importing torch and transformers.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from bt_search.errors import ImageDecodeError
from bt_search.media.exif import Capture, read_capture
from bt_search.media.file_reading import read_file_bytes
from bt_search.media.images import Preprocessing, load_rgb, preprocess, resize_and_crop
from bt_search.media.scan import FileRecord

PREFETCH_BATCHES = 3  # decoded batches allowed in flight ahead of the model


@dataclass(frozen=True)
class Decoded:
    record: FileRecord
    pixels: np.ndarray  # uint8 (crop, crop, 3): the engine normalises on its device
    width: int
    height: int
    sha256: str
    capture: Capture = Capture()


def exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: a parent killed with SIGKILL cannot stop its workers, so they watch for it."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def decode_record(record: FileRecord, prep: Preprocessing, draft: bool) -> Decoded | tuple[str, str]:
    """Worker job, for the local indexer and the Ray decode tasks alike: read once (a local path or a URL,
    capped at `config.max_file_bytes()`), hash, decode, preprocess. A failure comes back as (path, reason),
    not raised."""
    try:
        data = read_file_bytes(record.path)
    except ImageDecodeError as err:
        return record.path, err.reason
    if not data:
        return record.path, "empty file"
    try:
        img, (width, height) = load_rgb(
            io.BytesIO(data), draft_for=prep if draft else None, name=record.path, prep=prep
        )
        pixels = resize_and_crop(img, prep)
    except ImageDecodeError as err:
        return record.path, err.reason
    capture = read_capture(io.BytesIO(data), name=record.path)
    return Decoded(record, pixels, width, height, hashlib.sha256(data).hexdigest(), capture)


def load_file_pixels(path: str, prep: Preprocessing, draft: bool) -> np.ndarray:
    """Normalised float32 pixels [3, crop, crop] of one file (a local path or a URL), read as the indexer
    reads it (the rerank's candidates). Raises ImageDecodeError."""
    img, _ = load_rgb(io.BytesIO(read_file_bytes(path)), draft_for=prep if draft else None, name=path, prep=prep)
    return preprocess(img, prep)


def decoded_batches(
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
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
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
