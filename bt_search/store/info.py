"""What an index holds, without reading Parquet by hand: `bt-search info` and `bt-search failed`.

`index_info` reads the manifest (counts included) and the failure records; it never loads the model or
the embeddings. Renderers write data to a stream; the CLI picks the stream and format.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from bt_search.errors import UsageError

INFO_FORMATS = ("text", "json")
FAILED_FORMATS = ("table", "jsonl", "csv", "tsv", "paths")
FAILED_COLUMNS = ("path", "reason", "size", "mtime_ns")


def index_info(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Model, embedding size, counts, index type, measured recall, size on disk and last update of an index."""
    from bt_search.store import IndexReader

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


def _recall_text(recall: Any) -> str:
    if recall is None:
        return "not measured (exact search)"
    if isinstance(recall, dict) and "measured" in recall:
        return (
            f"recall@{recall['at']} {recall['measured']:.3f} on {recall['queries']} held-out queries at build "
            f"(target {recall['target']})"
        )
    return json.dumps(recall)


def disk_usage(directory: Path) -> int:
    total = 0
    for folder, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue  # a temporary file renamed meanwhile
    return total


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def render_info(info: dict[str, Any], fmt: str, stream: TextIO) -> None:
    if fmt not in INFO_FORMATS:
        raise UsageError(f"--format must be {' or '.join(INFO_FORMATS)}, not {fmt!r}")
    if fmt == "json":
        stream.write(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        return
    recall = info["recall"]
    rules = info["scan_rules"] or {}
    lines = [
        ("index", info["index"]),
        ("model", info["model"] + (f" @ {info['model_revision']}" if info["model_revision"] else "")),
        ("embedding size", info["embedding_dim"]),
        ("images", info["images"]),
        ("failed", f"{info['failed']}" + (" (list them: bt-search failed)" if info["failed"] else "")),
        ("index type", info["index_type"] or "none yet"),
        ("measured recall", _recall_text(recall)),
        ("size on disk", human_size(info["size_bytes"])),
        ("last update", info["updated"]),
        ("scan rules", _rules_text(rules) if rules else "defaults"),
        ("capture dates", "stored" if info["capture_info"] else "not yet (the next index run adds them)"),
    ]
    for name, value in lines:
        stream.write(f"{name + ':':<17}{value}\n")


def _rules_text(rules: dict[str, Any]) -> str:
    hidden = "hidden files included" if rules.get("include_hidden") else "hidden files skipped"
    excludes = ", ".join(rules.get("exclude") or []) or "no excludes"
    return f"{hidden}; {excludes}"


def failed_records(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    from bt_search.store import IndexReader

    failures = sorted(IndexReader.open(directory).failed(), key=lambda f: f.path)
    return [{name: getattr(f, name) for name in FAILED_COLUMNS} for f in failures]


def render_failed(records: Iterable[dict[str, Any]], fmt: str, stream: TextIO, null_separated: bool = False) -> None:
    """Failures as a table, jsonl, csv/tsv (with header) or bare paths (NUL-separated with `null_separated`)."""
    if fmt not in FAILED_FORMATS:
        raise UsageError(f"unknown output format {fmt!r}; choose one of: {', '.join(FAILED_FORMATS)}")
    if fmt == "jsonl":
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif fmt in ("csv", "tsv"):
        writer = csv.writer(stream, delimiter="," if fmt == "csv" else "\t")
        writer.writerow(FAILED_COLUMNS)
        writer.writerows([record[name] for name in FAILED_COLUMNS] for record in records)
    elif fmt == "paths":
        for record in records:
            stream.write(record["path"] + ("\0" if null_separated else "\n"))
    else:
        _render_table(records, stream)


def _render_table(records: Iterable[dict[str, Any]], stream: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold")
    table.add_column("path", overflow="fold")
    table.add_column("reason", overflow="fold")
    for record in records:
        table.add_row(Text(record["path"]), Text(record["reason"]))  # Text: "[...]" in names is not markup
    Console(file=stream, highlight=False).print(table)
