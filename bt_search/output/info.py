"""`bt-search info` and `bt-search failed` as text: an index's facts (text or json), its failed files (every
format of formats.py, as query hits are)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from bt_search.errors import UsageError
from bt_search.output.formats import TableColumn, render_records, shorter_path, visible_path
from bt_search.store import FailedRow

INFO_FORMATS = ("text", "json")
FAILED_COLUMNS = ("path", "reason", "size", "mtime_ns")
FAILED_TABLE = (
    TableColumn("path", lambda r: visible_path(shorter_path(r["path"])), whole=True),
    TableColumn("reason", lambda r: r["reason"], fold=True),
)


def _recall_text(recall: Any) -> str:
    if recall is None:
        return "not measured (exact search)"
    if isinstance(recall, dict) and "measured" in recall:
        return (
            f"recall@{recall['at']} {recall['measured']:.3f} on {recall['queries']} held-out queries at build "
            f"(target {recall['target']})"
        )
    return json.dumps(recall)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def render_info(info: dict[str, Any], fmt: str, stream: TextIO, failed_command: str = "bt-search failed") -> None:
    """`info` as text or JSON; `failed_command` is the command the text suggests for listing failed files
    (a CLI completes it with the options that picked the index)."""
    if fmt not in INFO_FORMATS:
        raise UsageError(f"`fmt` must be {' or '.join(INFO_FORMATS)}, not {fmt!r}")
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
        ("failed", f"{info['failed']}" + (f" (list them: {failed_command})" if info["failed"] else "")),
        ("index type", info["index_type"] or "none yet"),
        ("measured recall", _recall_text(recall)),
        ("size on disk", human_size(info["size_bytes"])),
        ("last update", info["updated"]),
        ("scan rules", _rules_text(rules) if rules else "defaults"),
        ("capture dates", "stored" if info["capture_info"] else "not yet (the next index run adds them)"),
    ]
    if info.get("auto_precision"):
        lines.append(("search computes", _precision_text(info["auto_precision"])))
    for name, value in lines:
        stream.write(f"{name + ':':<17}{value}\n")


def _precision_text(facts: dict[str, str]) -> str:
    """e.g. "on cpu: float32 embeddings, int8 rerank (precision auto, here)"."""
    return f"on {facts['device']}: {facts['dtype']} embeddings, {facts['rerank_dtype']} rerank (precision auto, here)"


def _rules_text(rules: dict[str, Any]) -> str:
    hidden = "hidden files included" if rules.get("include_hidden") else "hidden files skipped"
    excludes = ", ".join(rules.get("exclude") or []) or "no excludes"
    return f"{hidden}; {excludes}"


def render_failed(failures: Iterable[FailedRow], fmt: str, stream: TextIO, *, null_separated: bool = False) -> None:
    """Failures as a table, jsonl, csv/tsv (with header) or bare paths (NUL-separated with `null_separated`)."""
    records = ({name: getattr(failure, name) for name in FAILED_COLUMNS} for failure in failures)
    render_records(records, fmt, stream, columns=FAILED_COLUMNS, table=FAILED_TABLE, null_separated=null_separated)
