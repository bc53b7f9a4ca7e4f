"""`bt-search duplicates` as printed: one row per image of each group of near-duplicates, through the same
renderers as every other command (formats.render_records)."""

from __future__ import annotations

from typing import TextIO

from bt_search.output.formats import TableColumn, render_records, shorter_path, visible_path
from bt_search.search.duplicates import DuplicateGroup, group_records

COLUMNS = ("group", "size", "path", "similarity", "keep")
TABLE = (
    TableColumn("group", lambda r: str(r["group"]), justify="right"),
    TableColumn("size", lambda r: str(r["size"]), justify="right"),
    TableColumn("similarity", lambda r: f"{r['similarity']:.4f}", justify="right"),
    TableColumn("keep", lambda r: "keep" if r["keep"] else ""),
    TableColumn("path", lambda r: visible_path(shorter_path(r["path"])), whole=True),
)


def render_duplicates(groups: list[DuplicateGroup], fmt: str, stream: TextIO, *, null_separated: bool = False) -> None:
    """Write the groups in format `fmt`: jsonl/csv/tsv one row per image; table; paths (every path of every group)."""
    stream.reconfigure(errors="surrogateescape")
    render_records(group_records(groups), fmt, stream, columns=COLUMNS, table=TABLE, null_separated=null_separated)
    stream.flush()
