"""The query texts of `bt-search query`: arguments and `--queries-file` lines (standard library only, so the
attach fast path and the full CLI read them with the same code)."""

from __future__ import annotations

import sys
from pathlib import Path

from bt_search.errors import UsageError


def collect_queries(texts: list[str], queries_file: str | None, image: Path | None) -> list[str]:
    if image is not None:
        if texts or queries_file:
            raise UsageError("--image searches by an image; give no query text with it")
        return []
    queries = [utf8_argument(text) for text in texts]
    if queries_file is not None:
        queries += read_queries(queries_file)
    if not queries:
        raise UsageError("no query: give TEXT, --queries-file FILE (- for stdin) or --image PATH")
    if any(not q.strip() for q in queries):
        raise UsageError("empty query: give some text to search for")
    return queries


def read_queries(source: str) -> list[str]:
    """One query per line, UTF-8 with or without a byte-order mark; blank lines are ignored."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        text = data.decode("utf-8-sig")  # Windows editors start files with a BOM: not part of the query
    except OSError as err:
        raise UsageError(f"cannot read --queries-file {source}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        where = "stdin" if source == "-" else source
        raise UsageError(
            f"--queries-file {where} is not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset {err.start} "
            f"({err.reason}); save it as UTF-8"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def utf8_argument(text: str) -> str:
    """A query argument; bytes that were not UTF-8 reach Python as lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UsageError(f"query {text!r} is not UTF-8 text ({err.reason}); pass the query in UTF-8") from None
    return text
