"""Render search hits to a text stream: table, jsonl, csv, tsv or bare paths.

One entry point, `render(hits, fmt, stream)`. It writes each hit as it arrives, so a generator of hits
streams; only "table" collects the hits first (a rich table needs every row to size its columns, and it
is meant for a person at a terminal, where results are few).

To stream several queries into one csv/tsv, call `render` once per query and pass
`include_header=False` from the second call on; the other formats have no header ("table" hides its
header row).

Text goes to `stream` exactly as given. Paths that are not valid UTF-8 reach us as str with lone
surrogates (Python's surrogateescape); writing them needs a stream opened with
`errors="surrogateescape"`, which is the caller's choice (the CLI owns stdout).
"""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Iterable
from typing import TextIO

from bt_search.errors import UsageError
from bt_search.search.hits import Hit

FORMATS = ("table", "jsonl", "csv", "tsv", "paths")
COLUMNS = ("query", "rank", "path", "score", "similarity", "shortlist_rank", "taken_at")


def default_format(stdout_is_tty: bool) -> str:
    """ "table" for a person at a terminal; otherwise "jsonl".

    When stdout is a pipe or a file, a program reads it: jsonl is machine-readable with no quoting
    rules to guess, holds any path exactly, and is one object per line, so `head`, `jq` and friends
    can consume results as they stream.
    """
    return "table" if stdout_is_tty else "jsonl"


def render(
    hits: Iterable[Hit],
    fmt: str,
    stream: TextIO,
    *,
    null_separated: bool = False,
    include_header: bool = True,
) -> None:
    """Write `hits` to `stream` in format `fmt` (one of FORMATS).

    `null_separated` (the CLI's -0) is for "paths" only: each path is followed by NUL instead of a
    newline, for `xargs -0`. Raises UsageError for an unknown format, for -0 with another format, and
    in newline "paths" mode for a path holding a newline (it would read back as two paths).
    """
    check_format(fmt, null_separated)
    if fmt == "jsonl":
        _render_jsonl(hits, stream)
    elif fmt in ("csv", "tsv"):
        _render_delimited(hits, stream, delimiter="," if fmt == "csv" else "\t", header=include_header)
    elif fmt == "paths":
        _render_paths(hits, stream, terminator="\0" if null_separated else "\n")
    else:
        _render_table(hits, stream, header=include_header)


def write_query_output(
    results: Iterable[Iterable[Hit]], fmt: str, stream: TextIO, *, null_separated: bool = False
) -> None:
    """What `bt-search query` prints: each query's hits in turn under one csv/tsv header. File names that are
    not UTF-8 go out as their original bytes. Both the in-process search and the server fast path print this way."""
    stream.reconfigure(errors="surrogateescape")
    for position, hits in enumerate(results):
        render(hits, fmt, stream, null_separated=null_separated, include_header=position == 0)
    stream.flush()


def check_format(fmt: str, null_separated: bool = False) -> None:
    """Raise UsageError unless `fmt` (with -0 or not) can be rendered: callers check before any work."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown output format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if null_separated and fmt != "paths":
        raise UsageError(f"-0 (NUL-separated output) only applies to the 'paths' format, not {fmt!r}")


def hit_record(hit: Hit) -> dict[str, str | int | float | None]:
    """The hit as plain Python values in COLUMNS order (numpy scalars become int/float)."""
    return {
        "query": hit.query,
        "rank": int(hit.rank),
        "path": hit.path,
        "score": float(hit.score),
        "similarity": float(hit.similarity),
        "shortlist_rank": int(hit.shortlist_rank),
        "taken_at": hit.taken_at,
    }


def _render_jsonl(hits: Iterable[Hit], stream: TextIO) -> None:
    for hit in hits:
        stream.write(json.dumps(hit_record(hit), ensure_ascii=False) + "\n")


def _render_delimited(hits: Iterable[Hit], stream: TextIO, *, delimiter: str, header: bool) -> None:
    # The csv module's default dialect: minimal quoting and CRLF line ends (RFC 4180). Keeping "\r\n"
    # as the terminator is what makes the writer quote fields holding a lone "\r" as well as "\n".
    writer = csv.writer(stream, delimiter=delimiter)
    if header:
        writer.writerow(COLUMNS)
    for hit in hits:
        # repr-exact floats (str(float) round-trips), so a reader gets back the very same numbers.
        writer.writerow(hit_record(hit).values())


def _render_paths(hits: Iterable[Hit], stream: TextIO, *, terminator: str) -> None:
    for hit in hits:
        if terminator == "\n" and ("\n" in hit.path or "\r" in hit.path):
            raise UsageError(
                f"path {hit.path!r} contains a line break, so newline-separated output would split it; "
                "use -0 for NUL-separated paths (with `xargs -0`), or --format jsonl"
            )
        stream.write(hit.path + terminator)


def _render_table(hits: Iterable[Hit], stream: TextIO, *, header: bool) -> None:
    # rich only here: the other formats stay light for the attach fast path (serve/attach.py).
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=header, header_style="bold")
    table.add_column("query")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("similarity", justify="right")
    # fold, never ellipsise: a truncated path is useless to copy.
    table.add_column("path", overflow="fold")
    for hit in hits:
        # Text cells, not str: rich would read "[...]" in file names as markup.
        table.add_row(
            Text(hit.query),
            str(hit.rank),
            f"{hit.score:.4f}",
            f"{hit.similarity:.4f}",
            Text(visible_path(hit.path)),
        )
    Console(file=stream, highlight=False).print(table)


def visible_path(path: str) -> str:
    """`path` for a person's eyes: control characters, which a terminal acts on or rich drops (a
    carriage return), shown as escapes; a newline stays a line break, which the table folds visibly."""
    return "".join(_escaped(char) if unicodedata.category(char) == "Cc" and char != "\n" else char for char in path)


def _escaped(char: str) -> str:
    return {"\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")
