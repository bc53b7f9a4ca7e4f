"""Index records as Python values, and their conversion to and from Arrow."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import ModelMismatchError
from .index_files import CAPTURE_COLUMNS, GENERATION_KEY, OP_FAILED, OP_IMAGE, OP_REMOVED, OPS_META_SCHEMA, segment_schema

_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ImageRow:
    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    embedding: np.ndarray  # float32 [D], L2-normalised
    taken_at: str | None = None  # EXIF DateTimeOriginal as ISO 8601, with its offset when known (capture.py)
    camera_make: str | None = None
    camera_model: str | None = None


@dataclass(frozen=True)
class FailedRow:
    path: str
    reason: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class IndexStats:
    images: int  # live image rows after finish()
    failed: int  # files recorded as failed after finish()
    removed: int  # live entries that this writer's commits removed


@dataclass
class IndexIdentity:
    """What makes embeddings comparable: a writer must agree on every field; a reader on the space alone."""

    model: str
    model_revision: str | None
    embedding_dim: int
    preprocessing: dict[str, Any]
    embedding_fingerprint: str | None = None  # hash of the ITC heads: equal for copies of one checkpoint

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> IndexIdentity:
        return cls(
            manifest["model"],
            manifest["model_revision"],
            int(manifest["embedding_dim"]),
            manifest["preprocessing"],
            manifest.get("embedding_fingerprint"),
        )

    def to_manifest(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_revision": self.model_revision,
            "embedding_dim": int(self.embedding_dim),
            "preprocessing": json.loads(json.dumps(self.preprocessing)),
            "embedding_fingerprint": self.embedding_fingerprint,
        }

    def differences(self, other: IndexIdentity) -> list[str]:
        """One "field: mine vs theirs" line per identity field that differs (empty: compatible)."""
        mine, theirs = self.to_manifest(), other.to_manifest()  # JSON-normalised: tuples == lists
        return [f"{key}: {mine[key]!r} vs {theirs[key]!r}" for key in mine if mine[key] != theirs[key]]

    def is_compatible(self, other: IndexIdentity) -> bool:
        return not self.differences(other)

    def same_embedding_space(self, other: IndexIdentity) -> bool:
        """Queries may use another copy of the model (another path or id) when its embeddings are the same."""
        differing = {line.split(":", 1)[0] for line in self.differences(other)}
        return differing <= {"model", "model_revision"} and self.embedding_fingerprint is not None

    def require_compatible(self, wanted: IndexIdentity, directory: str | os.PathLike[str]) -> None:
        """Raise ModelMismatchError when `wanted` (e.g. the model asked for) does not fit this index."""
        differences = self.differences(wanted)
        if differences:
            raise ModelMismatchError(
                f"index {directory} was built with model {self.model} and cannot be used with "
                f"model {wanted.model} ({'; '.join(differences)}); use another --index, "
                f"or the original --model {self.model}"
            )


def image_row(images: pa.Table, embeddings: np.ndarray, i: int) -> ImageRow:
    record = images.slice(i, 1).to_pylist()[0]
    return ImageRow(**record, embedding=np.array(embeddings[i]))


def images_table(meta: pa.Table, embeddings: np.ndarray, generation: int) -> pa.Table:
    """images.parquet's table: the rows' metadata, their embeddings, and the generation it belongs to."""
    values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(values, embeddings.shape[1])
    table = meta.append_column("embedding", column)
    return table.replace_schema_metadata({GENERATION_KEY: str(generation).encode()})


def segment_table(rows: Sequence[ImageRow], failed: Sequence[FailedRow], removed: Sequence[str], dim: int) -> pa.Table:
    removed = list(removed)
    paths = [row.path for row in rows] + [failure.path for failure in failed] + removed
    if len(set(paths)) != len(paths):
        raise ValueError("a path appears more than once in one commit")
    for path in paths:
        if not (os.path.isabs(path) or "://" in path):  # URLs (s3://, file://) are stored as given
            raise ValueError(f"index paths must be absolute or URLs, got {path!r}")
    no_failed, no_removed = [None] * len(failed), [None] * len(removed)
    columns = {
        "path": paths,
        "op": [OP_IMAGE] * len(rows) + [OP_FAILED] * len(failed) + [OP_REMOVED] * len(removed),
        "size": [row.size for row in rows] + [failure.size for failure in failed] + no_removed,
        "mtime_ns": [row.mtime_ns for row in rows] + [failure.mtime_ns for failure in failed] + no_removed,
        "sha256": [row.sha256 for row in rows] + no_failed + no_removed,
        "width": [row.width for row in rows] + no_failed + no_removed,
        "height": [row.height for row in rows] + no_failed + no_removed,
        "reason": [None] * len(rows) + [failure.reason for failure in failed] + no_removed,
        **{name: [getattr(row, name) for row in rows] + no_failed + no_removed for name in CAPTURE_COLUMNS},
    }
    arrays = [pa.array(columns[field.name], field.type) for field in OPS_META_SCHEMA]
    return pa.Table.from_arrays([*arrays, _embedding_column(rows, len(paths), dim)], schema=segment_schema(dim))


def _embedding_column(rows: Sequence[ImageRow], length: int, dim: int) -> pa.Array:
    """Rows' embeddings first, then nulls for the failed/removed entries."""
    values = np.zeros((length, dim), dtype=np.float32)
    for i, row in enumerate(rows):
        values[i] = _checked_embedding(row, dim)
    is_null = pa.array(np.arange(length) >= len(rows))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), dim, mask=is_null)


def _checked_embedding(row: ImageRow, dim: int) -> np.ndarray:
    embedding = np.asarray(row.embedding, dtype=np.float32)
    if embedding.shape != (dim,):
        raise ValueError(f"{row.path}: embedding has shape {embedding.shape}, the index holds ({dim},)")
    if not np.isfinite(embedding).all() or abs(float(np.linalg.norm(embedding)) - 1.0) > _NORM_TOLERANCE:
        raise ValueError(f"{row.path}: embedding is not L2-normalised")
    return embedding
