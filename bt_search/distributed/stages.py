"""The two per-batch stages Ray Data runs: decode (CPU tasks) and embed (actors holding the model).

Neither imports Ray: they are plain functions of numpy batches (dict of column -> array), testable alone.
Decode imports only numpy and Pillow, so its worker processes start fast; the embedder loads torch and the
model once, in its actor's constructor. Both record a failure as its reason in the `error` column (empty
when the row is fine) with zero pixels or a zero embedding, so failures ride the same stream to the writer.
"""

from __future__ import annotations

import os

import numpy as np

from bt_search.media.decoding import Decoded, decode_record
from bt_search.media.images import Preprocessing
from bt_search.media.scan import FileRecord
from bt_search.media.video import VideoSampling

LISTING_COLUMNS = ("path", "size", "mtime_ns")
CAPTURE_COLUMNS = ("taken_at", "camera_make", "camera_model")  # as the local indexer stores them
# Capture columns travel with "" for "no value" (capture never yields ""): a column of None alone would reach
# the driver as float NaN (Arrow's null type, converted back to numpy), which str() turned into "nan".
NO_CAPTURE_VALUE = ""


def capture_value(value: object) -> str | None:
    """A transported capture column's value as the index stores it: the text, or None."""
    return value if isinstance(value, str) and value != NO_CAPTURE_VALUE else None


def decode_batch(
    batch: dict[str, np.ndarray], prep: Preprocessing, draft: bool, video: VideoSampling | None = None
) -> dict[str, np.ndarray]:
    """Listing rows -> rows with sha256, size in pixels, capture info, uint8 crops [B, crop, crop, 3] and an
    error column. A video becomes a row per kept frame (decode_record samples them, as the local indexer does):
    `frame_time` (NaN for an image) and `frames` (how many rows its file made, so the driver commits a video's
    rows together however Ray splits them into batches)."""
    columns = zip(*(batch[c] for c in LISTING_COLUMNS))
    listed = [FileRecord(os.fsdecode(p), int(s), int(m)) for p, s, m in columns]  # paths travel as bytes
    records, results, crops, times, counts = [], [], [], [], []
    for record in listed:
        result = decode_record(record, prep, draft, video)
        frames = result.frames() if isinstance(result, Decoded) else [(None, None)]
        for crop, time in frames:
            records.append(record)
            results.append(result)
            crops.append(crop)
            times.append(np.nan if time is None else time)
            counts.append(len(frames))
    ok = [isinstance(result, Decoded) for result in results]
    pixels = np.zeros((len(records), prep.crop, prep.crop, 3), np.uint8)
    for i, crop in enumerate(crops):
        if ok[i]:
            pixels[i] = crop
    return {
        "path": np.array([os.fsencode(r.path) for r in records], dtype=object),
        "size": np.array([r.size for r in records], dtype=np.int64),
        "mtime_ns": np.array([r.mtime_ns for r in records], dtype=np.int64),
        "sha256": np.array([res.sha256 if good else "" for res, good in zip(results, ok)], dtype=object),
        "width": np.array([res.width if good else 0 for res, good in zip(results, ok)], dtype=np.int64),
        "height": np.array([res.height if good else 0 for res, good in zip(results, ok)], dtype=np.int64),
        "error": np.array(["" if good else res[1] for res, good in zip(results, ok)], dtype=object),
        **{
            name: np.array(
                [
                    (res.capture.as_fields()[name] or NO_CAPTURE_VALUE) if good else NO_CAPTURE_VALUE
                    for res, good in zip(results, ok)
                ],
                dtype=object,
            )
            for name in CAPTURE_COLUMNS
        },
        "frame_time": np.array(times, dtype=np.float64),
        "frames": np.array(counts, dtype=np.int64),
        "pixels": pixels,
    }


class Embedder:
    """Actor-side image tower: loads the checkpoint once, then embeds every batch it is handed."""

    def __init__(self, model: str, revision: str | None, device: str, precision: str, fingerprint: str, threads: int):
        import torch

        from bt_search.engine.facts import read_model_facts
        from bt_search.engine.loading import load_engine
        from bt_search.errors import ModelMismatchError

        torch.set_num_threads(threads)
        self.engine = load_engine(model, revision=revision, device=device, precision=precision)
        facts = read_model_facts(model, revision)  # of float32 values, as the driver's, at any precision
        if (facts.fingerprint if facts else self.engine.embedding_fingerprint()) != fingerprint:  # another model
            raise ModelMismatchError(f"{model} on this Ray node is not the checkpoint the index was opened with")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["error"] == "", dtype=bool)
        embeddings = np.zeros((len(ok), self.engine.embedding_dim), np.float32)
        if ok.any():
            embeddings[ok] = self.engine.encode_images(np.ascontiguousarray(batch["pixels"][ok]))
        out = {name: column for name, column in batch.items() if name != "pixels"}
        out["embedding"] = embeddings
        return out
