"""Deterministic index rows for store tests, importable by the writer processes those tests start (a child
process cannot receive a test module's helpers any other way)."""

from __future__ import annotations

import zlib

import numpy as np

from bt_search.store import ImageRow, IndexIdentity

DIM = 8
IDENTITY = IndexIdentity("tiny/bridgetower", "abc123", DIM, {"size": 288})


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def image_row(name: str, version: int, camera: str | None = None) -> ImageRow:
    """The row of /p/NAME at VERSION: its embedding is a function of both, so every version differs."""
    return ImageRow(
        f"/p/{name}",
        version,
        7,
        f"sha-{name}-{version}",
        4,
        3,
        vector(zlib.crc32(f"{name}-{version}".encode())),
        camera_make=camera,
    )
