"""Index records as Python values, and their conversion to and from Arrow."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from bt_search.errors import ModelMismatchError
from bt_search.store.files import FAILED_SCHEMA, META_COLUMNS, part_schema
from bt_search.store.stored_paths import original_path, stored_path, stored_paths

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
    taken_at: str | None = None  # ISO 8601 capture time from EXIF, when known
    camera_make: str | None = None
    camera_model: str | None = None
    frame_time: float | None = None  # a video's frame: its time in seconds (the video's rows share the path)


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
    def of(cls, model: Any) -> IndexIdentity:
        """The identity a model writes: an engine or the Ray driver's model facts (duck-typed, so the store
        needs no torch)."""
        return cls(
            model=model.model_id,
            model_revision=model.revision,
            embedding_dim=model.embedding_dim,
            preprocessing=model.preprocessing.as_dict(),
            embedding_fingerprint=model.embedding_fingerprint(),
        )

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
                f"model {wanted.model} ({'; '.join(differences)}); use another `index`, "
                f"or the original `model` {self.model}"
            )


def image_rows(table: pa.Table) -> list[ImageRow]:
    """ImageRows of a part-shaped table (row_id and extra columns ignored)."""
    embeddings = embeddings_matrix(table.column("embedding"), table.schema.field("embedding").type.list_size)
    meta = table.select([name for name in META_COLUMNS if name in table.column_names]).to_pylist()
    return [
        ImageRow(**{**record, "path": original_path(record["path"])}, embedding=np.array(embeddings[i]))
        for i, record in enumerate(meta)
    ]


def embeddings_matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """[N, dim] float32 of a fixed-size-list column (zero-copy when it is one chunk without nulls)."""
    if isinstance(column, pa.ChunkedArray):
        chunks = [chunk for chunk in column.chunks if len(chunk)]
        if not chunks:
            return np.zeros((0, dim), dtype=np.float32)
        column = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def part_table(rows: Sequence[ImageRow], first_row_id: int, dim: int) -> pa.Table:
    """A part's table: `rows` with row ids first_row_id, first_row_id + 1, ..."""
    schema = part_schema(dim)
    columns = {"row_id": np.arange(first_row_id, first_row_id + len(rows), dtype=np.int64)}
    for name in META_COLUMNS:
        values = [getattr(row, name) for row in rows]
        columns[name] = pa.array(stored_paths(values) if name == "path" else values, schema.field(name).type)
    values = np.zeros((len(rows), dim), dtype=np.float32)
    for i, row in enumerate(rows):
        values[i] = _checked_embedding(row, dim)
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), dim)
    return pa.Table.from_pydict(columns, schema=schema)


def failure_table(failed: Sequence[FailedRow], cleared: Sequence[str]) -> pa.Table:
    """A failure part: the failures, then null-reason rows that clear the failures of `cleared` paths."""
    none = [None] * len(cleared)
    return pa.Table.from_pydict(
        {
            "path": stored_paths([f.path for f in failed] + list(cleared)),
            "reason": [f.reason for f in failed] + none,
            "size": [f.size for f in failed] + none,
            "mtime_ns": [f.mtime_ns for f in failed] + none,
        },
        schema=FAILED_SCHEMA,
    )


def check_commit_paths(rows: Sequence[ImageRow], failed: Sequence[FailedRow], removed: Sequence[str]) -> list[str]:
    """All paths of one commit, each once; ValueError if one repeats or is not absolute. A video's frames share
    its path: they may repeat it, at distinct frame times, and together they replace all of the video's rows."""
    stills = [row.path for row in rows if row.frame_time is None]
    frames = [(row.path, row.frame_time) for row in rows if row.frame_time is not None]
    if len(set(frames)) != len(frames):
        raise ValueError("a video frame appears more than once in one commit")
    units = stills + list(dict.fromkeys(path for path, _ in frames))
    paths = units + [failure.path for failure in failed] + list(removed)
    if len(set(paths)) != len(paths):
        raise ValueError("a path appears more than once in one commit")
    for path in paths:
        if not (os.path.isabs(path) or "://" in path):  # URLs (s3://, file://) are stored as given
            raise ValueError(f"index paths must be absolute or URLs, got {path!r}")
        stored_path(path)  # raises for what no file system names
    return paths


def _checked_embedding(row: ImageRow, dim: int) -> np.ndarray:
    embedding = np.asarray(row.embedding, dtype=np.float32)
    if embedding.shape != (dim,):
        raise ValueError(f"{row.path}: embedding has shape {embedding.shape}, the index holds ({dim},)")
    if not np.isfinite(embedding).all() or abs(float(np.linalg.norm(embedding)) - 1.0) > _NORM_TOLERANCE:
        raise ValueError(f"{row.path}: embedding is not L2-normalised")
    return embedding
