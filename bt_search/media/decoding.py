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
from bt_search.media.video import VideoSampling, sample_frames
from bt_search.media.video_reading import frame_at, is_video

PREFETCH_BATCHES = 3  # decoded batches allowed in flight ahead of the model


@dataclass(frozen=True)
class Decoded:
    record: FileRecord
    pixels: np.ndarray  # uint8 (crop, crop, 3): the engine normalises on its device
    width: int
    height: int
    sha256: str
    capture: Capture = Capture()
    # A video: the kept frames' times in seconds, and `pixels` holds one crop per frame (n, crop, crop, 3).
    frame_times: tuple[float, ...] | None = None

    def frames(self) -> list[tuple[np.ndarray, float | None]]:
        """(uint8 crop, frame time) of each row this file makes: one (time None) for an image."""
        if self.frame_times is None:
            return [(self.pixels, None)]
        return list(zip(self.pixels, self.frame_times))


def exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: a parent killed with SIGKILL cannot stop its workers, so they watch for it."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def decode_record(
    record: FileRecord, prep: Preprocessing, draft: bool, video: VideoSampling | None = None
) -> Decoded | tuple[str, str]:
    """Worker job, for the local indexer and the Ray decode tasks alike: read once (a local path or a URL,
    capped at `config.max_file_bytes()`), hash, decode, preprocess. A video's kept frames (sampled as `video`
    says, None: the defaults) come back as one Decoded with a crop per frame. A failure comes back as
    (path, reason), not raised."""
    if is_video(record.path):
        return _decode_video(record, prep, video or VideoSampling())
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


def _decode_video(record: FileRecord, prep: Preprocessing, video: VideoSampling) -> Decoded | tuple[str, str]:
    try:
        sampled = sample_frames(record.path, video, convert=lambda img: resize_and_crop(img, prep))
    except ImageDecodeError as err:
        return record.path, err.reason
    pixels = np.stack(sampled.frames)
    return Decoded(record, pixels, sampled.width, sampled.height, sampled.sha256, sampled.capture, tuple(sampled.times))


def load_file_image(
    path: str,
    draft_for: Preprocessing | None = None,
    frame_time: float | None = None,
    prep: Preprocessing | None = None,
):
    """One file's RGB image as the indexer decodes it (a local path or a URL): for a video, its frame at
    `frame_time` seconds. Rerank and thumbnails use this. Raises ImageDecodeError."""
    if frame_time is not None or is_video(path):
        return frame_at(path, frame_time or 0.0)
    img, _ = load_rgb(io.BytesIO(read_file_bytes(path)), draft_for=draft_for, name=path, prep=prep)
    return img


def load_file_pixels(path: str, prep: Preprocessing, draft: bool, frame_time: float | None = None) -> np.ndarray:
    """Normalised float32 pixels [3, crop, crop] of one file (a local path or a URL), or of a video's frame at
    `frame_time`, read as the indexer reads it (the rerank's candidates). Raises ImageDecodeError."""
    return preprocess(load_file_image(path, prep if draft else None, frame_time, prep=prep), prep)


def decoded_batches(
    records: Sequence[FileRecord],
    prep: Preprocessing,
    batch_size: int,
    workers: int,
    draft: bool,
    video: VideoSampling | None = None,
) -> Iterator[tuple[list[Decoded], list[tuple[str, str]]]]:
    """Yield (decoded batch, failures in it), in input order, decoding up to a few batches ahead. A batch holds
    `batch_size` files; a video's frames stay together in one batch (its rows are committed as a unit)."""
    results = _decode_all(records, prep, workers, draft, window=batch_size * PREFETCH_BATCHES, video=video)
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


def _decode_all(
    records, prep, workers: int, draft: bool, window: int, video: VideoSampling | None = None
) -> Iterator[Decoded | tuple[str, str]]:
    if workers <= 0 or len(records) < 2:
        for record in records:
            yield decode_record(record, prep, draft, video)
        return
    # spawn, not fork: the parent holds torch's thread pools, which fork does not copy safely.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
        try:
            yield from _windowed(pool, records, prep, draft, window, video)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _windowed(pool: Executor, records, prep, draft, window: int, video=None) -> Iterator[Decoded | tuple[str, str]]:
    pending: deque[Future] = deque()
    upcoming = iter(records)
    for record in upcoming:
        pending.append(pool.submit(decode_record, record, prep, draft, video))
        if len(pending) >= window:
            break
    while pending:
        result = pending.popleft().result()
        next_record = next(upcoming, None)
        if next_record is not None:
            pending.append(pool.submit(decode_record, next_record, prep, draft, video))
        yield result
