"""What an index holds, read from its manifest and failure records: counts, model, ANN recall, size on disk.

Never loads the model or the embeddings. output/info.py renders these for `bt-search info` and `failed`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bt_search.store.reader import IndexReader
from bt_search.store.records import FailedRow


def index_info(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Model, embedding size, counts, index type, measured recall, size on disk and last update of an index."""
    reader = IndexReader.open(directory)
    manifest = reader.manifest
    settings = manifest.get("settings") or {}
    return {
        "index": str(Path(directory).resolve()),
        "model": manifest["model"],
        "model_revision": manifest.get("model_revision"),
        "embedding_dim": int(manifest["embedding_dim"]),
        "images": len(reader),
        "failed": len(reader.failed()),
        "index_type": manifest.get("index_type"),
        "recall": measured_recall(manifest),
        "size_bytes": disk_usage(Path(directory)),
        "created": manifest.get("created"),
        "updated": manifest.get("updated"),
        "format_version": manifest.get("format_version"),
        "tool_version": manifest.get("tool_version"),
        "scan_rules": settings.get("scan_rules"),
        "capture_info": bool(settings.get("capture_info")),
    }


def measured_recall(manifest: dict[str, Any]) -> Any:
    """The ANN recall measured at build time, where the manifest records one (else None: exact search)."""
    for source in (manifest.get("ann") or {}, manifest.get("faiss") or {}, manifest):
        for key in ("recall", "measured_recall"):
            if source.get(key) is not None:
                return source[key]
    return None


def disk_usage(directory: Path) -> int:
    total = 0
    for folder, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue  # a temporary file renamed meanwhile
    return total


def failed_rows(directory: str | os.PathLike[str]) -> list[FailedRow]:
    """The files an index could not take, by path."""
    return sorted(IndexReader.open(directory).failed(), key=lambda failure: failure.path)
