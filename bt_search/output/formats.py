"""Records to a text stream: table, jsonl, csv, tsv or bare paths. Every renderer of the CLI goes through here
(query hits, failed files), so each format has one set of rules.

Records are dicts of plain values in column order. Each record is written as it arrives, so a generator
streams; only "table" collects first (a rich table sizes its columns from every row, and it is meant for
a person at a terminal, where rows are few).

Text goes to `stream` exactly as given. Paths that are not valid UTF-8 reach us as str with lone
surrogates (Python's surrogateescape); writing them needs a stream opened with `errors="surrogateescape"`,
which is the caller's choice (the CLI owns stdout).
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, TextIO

from bt_search.errors import UsageError

FORMATS = ("table", "jsonl", "csv", "tsv", "paths")
Record = dict[str, Any]


@dataclass(frozen=True)
class TableColumn:
    """One column of the terminal table: its header, the cell text of a record, and its layout."""

    header: str
    cell: Callable[[Record], str]
    justify: str = "left"
    fold: bool = False  # long values fold onto more lines, never ellipsised (a cut path is useless to copy)
    # A value to read whole (a path): when a row cannot hold it at full length, it goes on its own line below the
    # row, and folds only where it is longer than the line itself.
    whole: bool = False
    hidden: Callable[[Sequence[Record]], bool] | None = None  # true: these records make the column redundant


def default_format(stdout_is_tty: bool) -> str:
    """ "table" for a person at a terminal; otherwise "jsonl".

    When stdout is a pipe or a file, a program reads it: jsonl is machine-readable with no quoting
    rules to guess, holds any path exactly, and is one object per line, so `head`, `jq` and friends
    can consume results as they stream.
    """
    return "table" if stdout_is_tty else "jsonl"


def check_format(fmt: str, null_separated: bool = False) -> None:
    """Raise UsageError unless `fmt` (with -0 or not) can be rendered: callers check before any work."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown output format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if null_separated and fmt != "paths":
        raise UsageError(
            f"`null_separated=True` (NUL-separated output) only applies to the 'paths' format, not {fmt!r}"
        )


def render_records(
    records: Iterable[Record],
    fmt: str,
    stream: TextIO,
    *,
    columns: Sequence[str],
    table: Sequence[TableColumn],
    null_separated: bool = False,
    include_header: bool = True,
    title: Callable[[Record], str] | None = None,
) -> None:
    """Write `records` in format `fmt`. csv/tsv write `columns` (with a header row unless `include_header` is
    false); "table" shows `table`, one table under a title line for each run of records with the same `title`;
    "paths" writes each record's "path" (NUL-terminated with `null_separated`)."""
    check_format(fmt, null_separated)
    if fmt == "jsonl":
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif fmt in ("csv", "tsv"):
        _render_delimited(records, stream, columns, delimiter="," if fmt == "csv" else "\t", header=include_header)
    elif fmt == "paths":
        _render_paths(records, stream, terminator="\0" if null_separated else "\n")
    else:
        _render_table(records, stream, table, header=include_header, title=title)


def _render_delimited(
    records: Iterable[Record], stream: TextIO, columns: Sequence[str], *, delimiter: str, header: bool
) -> None:
    # RFC 4180's quoting with LF line ends, as shell tools (cut, awk, sort) expect: `cut -f7` must not end in
    # "\r". Written by hand because the csv module quotes only the characters of its line terminator, so with
    # "\n" a field holding a lone "\r" would go out bare and read back as two lines.
    if header:
        stream.write(_delimited_line(columns, delimiter))
    for record in records:
        stream.write(_delimited_line([record[name] for name in columns], delimiter))


def _delimited_line(values: Sequence[Any], delimiter: str) -> str:
    """One row: None as an empty field, floats repr-exact (str(float) round-trips, so a reader gets back the very
    same numbers); a field holding the delimiter, a quote or a line break is quoted, its quotes doubled."""
    fields = ["" if value is None else str(value) for value in values]
    line = delimiter.join(_quoted(field, delimiter) for field in fields)
    return ('""' if fields == [""] else line) + "\n"  # a lone empty field: a quoted one, not a blank line


def _quoted(field: str, delimiter: str) -> str:
    if delimiter in field or '"' in field or "\n" in field or "\r" in field:
        return '"' + field.replace('"', '""') + '"'
    return field


def _render_paths(records: Iterable[Record], stream: TextIO, *, terminator: str) -> None:
    for record in records:
        path = record["path"]
        if terminator == "\n" and ("\n" in path or "\r" in path):
            raise UsageError(
                f"path {path!r} contains a line break, so newline-separated output would split it; "
                "use `null_separated=True` for NUL-separated paths (with `xargs -0`), or `fmt=jsonl`"
            )
        stream.write(path + terminator)


def _render_table(
    records: Iterable[Record],
    stream: TextIO,
    columns: Sequence[TableColumn],
    *,
    header: bool,
    title: Callable[[Record], str] | None,
) -> None:
    # rich only here: the other formats stay light for the attach fast path (cli/attach.py).
    from rich.console import Console
    from rich.text import Text

    console = Console(file=stream, highlight=False)
    for heading, group in groupby(records, key=title) if title is not None else [(None, records)]:
        rows = list(group)
        if heading is not None:
            console.print(Text(visible_path(heading), style="bold"), overflow="fold")
        shown = [column for column in columns if column.hidden is None or not column.hidden(rows)]
        # Text cells, not str: rich would read "[...]" in file names as markup.
        cells = [[Text(column.cell(record)) for column in shown] for record in rows]
        table = _table(shown, header)
        for row in cells:
            table.add_row(*row)
        if not any(column.whole for column in shown) or _natural_width(console, table) <= console.width:
            console.print(table)
        else:
            _print_whole_values_below(console, shown, cells, header)


def _table(columns: Sequence[TableColumn], header: bool, widths: Sequence[int | None] | None = None):
    from rich import box
    from rich.table import Table

    table = Table(
        show_header=header,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for column, width in zip(columns, widths or [None] * len(columns)):
        table.add_column(
            column.header,
            justify=column.justify,
            overflow="fold" if column.fold or column.whole else "ellipsis",
            no_wrap=not (column.fold or column.whole),
            width=width,
        )
    return table


def _natural_width(console, table) -> int:
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update(width=1 << 16), table).maximum


def _print_whole_values_below(console, columns: Sequence[TableColumn], cells: list[list], header: bool) -> None:
    """Rows too wide for the line: the other columns as a table (same widths on every row), each row's whole
    values (paths) on lines of their own beneath it."""
    from rich.cells import cell_len

    grid = [i for i, column in enumerate(columns) if not column.whole]
    widths = [max([cell_len(columns[i].header) if header else 0, *(row[i].cell_len for row in cells)]) for i in grid]
    folding = [n for n, i in enumerate(grid) if columns[i].fold]
    spare = console.width - 2 * (len(grid) - 1) - sum(w for n, w in enumerate(widths) if n not in folding)
    for n in folding:  # long text columns (a failure's reason) share what the short ones leave
        widths[n] = min(widths[n], max(8, spare // len(folding)))
    for number, row in enumerate(cells):
        table = _table([columns[i] for i in grid], header and number == 0, widths)
        table.add_row(*(row[i] for i in grid))
        console.print(table)
        for i, column in enumerate(columns):
            if column.whole:
                console.print(row[i], overflow="fold")


def shorter_path(path: str) -> str:
    """`path` relative to the current directory where that is shorter (a table is read in the shell that printed
    it), else as it is. URLs and relative paths stay as they are."""
    if not os.path.isabs(path):
        return path
    try:
        relative = os.path.relpath(path)
    except (OSError, ValueError):  # the current directory is gone, or another drive (Windows)
        return path
    return relative if len(relative) < len(path) else path


def visible_path(path: str) -> str:
    """`path` for a person's eyes: control characters, which a terminal acts on or rich drops (a
    carriage return), shown as escapes; a newline stays a line break, which the table folds visibly."""
    return "".join(_escaped(char) if unicodedata.category(char) == "Cc" and char != "\n" else char for char in path)


def _escaped(char: str) -> str:
    return {"\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")
