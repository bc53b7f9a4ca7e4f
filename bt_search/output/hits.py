"""Search hits as `bt-search query` prints them: the columns of a hit, and each query's hits in turn.

`render(hits, fmt, stream)` writes one query's hits (formats.py holds the rules of each format). To stream
several queries into one csv/tsv, call it once per query with `include_header=False` from the second call
on; the other formats have no header ("table" hides its header row). `write_query_output` does exactly
that, for the in-process search and the server's answers alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from bt_search.output.formats import TableColumn, render_records, visible_path
from bt_search.search.hits import Hit

COLUMNS = ("query", "rank", "path", "score", "similarity", "shortlist_rank", "taken_at")
TABLE = (
    TableColumn("query", lambda r: r["query"]),
    TableColumn("rank", lambda r: str(r["rank"]), justify="right"),
    TableColumn("score", lambda r: f"{r['score']:.4f}", justify="right"),
    TableColumn("similarity", lambda r: f"{r['similarity']:.4f}", justify="right"),
    TableColumn("path", lambda r: visible_path(r["path"]), fold=True),
)


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


def render(
    hits: Iterable[Hit], fmt: str, stream: TextIO, *, null_separated: bool = False, include_header: bool = True
) -> None:
    """Write one query's `hits` to `stream` in format `fmt` (see formats.render_records)."""
    records = (hit_record(hit) for hit in hits)
    render_records(
        records, fmt, stream, columns=COLUMNS, table=TABLE, null_separated=null_separated, include_header=include_header
    )


def write_query_output(
    results: Iterable[Iterable[Hit]], fmt: str, stream: TextIO, *, null_separated: bool = False
) -> None:
    """What `bt-search query` prints: each query's hits in turn under one csv/tsv header. File names that are
    not UTF-8 go out as their original bytes. Both the in-process search and the server fast path print this way."""
    stream.reconfigure(errors="surrogateescape")
    for position, hits in enumerate(results):
        render(hits, fmt, stream, null_separated=null_separated, include_header=position == 0)
    stream.flush()
