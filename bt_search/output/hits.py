"""Search hits as `bt-search query` prints them: the columns of a hit, and each query's hits in turn.

`render(hits, fmt, stream)` writes one query's hits (formats.py holds the rules of each format). To stream
several queries into one csv/tsv, call it once per query with `include_header=False` from the second call
on; jsonl and paths have no header. A table is a title line (the query) and its own table per query, each
with its header row. `write_query_output` does exactly that, for the in-process search and the server's
answers alike.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import TextIO

from bt_search.output.formats import Record, TableColumn, render_records, shorter_path, visible_path
from bt_search.search.hits import Explanation, Hit

# New fields go last, so scripts that cut columns by position keep working.
# `t`: a video frame's time in seconds (null for a still image); `paths` writes the file's path alone, so a pipe
# into xargs still names files (docs/output.md).
COLUMNS = ("query", "rank", "path", "score", "similarity", "shortlist_rank", "taken_at", "itm", "t", "duplicates")
# `duplicates`: the paths of the near-duplicates folded into the hit, a list in jsonl (a record is a Hit's fields);
# csv and tsv, whose cells hold no lists, give their number.


def _score_repeats_another(records: Sequence[Record]) -> bool:
    """Whether `score` is the cosine (no rerank, an image query) or the ITM probability (`score="itm"`) in every row:
    the table then shows that column alone."""
    return all(r["score"] == r["similarity"] for r in records) or all(r["score"] == r["itm"] for r in records)


# The query is the title over its hits (render_records' `title`), not a column repeated on every row.
TABLE = (
    TableColumn("rank", lambda r: str(r["rank"]), justify="right"),
    TableColumn("score", lambda r: f"{r['score']:.4f}", justify="right", hidden=_score_repeats_another),
    TableColumn(
        "itm",
        lambda r: "" if r["itm"] is None else f"{r['itm']:.4f}",
        justify="right",
        hidden=lambda records: all(r["itm"] is None for r in records),
    ),
    TableColumn("similarity", lambda r: f"{r['similarity']:.4f}", justify="right"),
    TableColumn(
        "t",
        lambda r: "" if r["t"] is None else frame_time_text(r["t"]),
        justify="right",
        hidden=lambda records: all(r["t"] is None for r in records),
    ),
    TableColumn("path", lambda r: visible_path(shorter_path(r["path"])), whole=True),
    TableColumn(
        "similar",
        lambda r: f"+{len(r['duplicates'])}" if r["duplicates"] else "",
        justify="right",
        hidden=lambda records: not any(r["duplicates"] for r in records),
    ),
)


def hit_record(hit: Hit) -> dict[str, str | int | float | dict | None]:
    """The hit as plain Python values in COLUMNS order (numpy scalars become int/float); an explained hit's
    `explanation` last."""
    return {
        "query": hit.query,
        "rank": int(hit.rank),
        "path": hit.path,
        "score": float(hit.score),
        "similarity": float(hit.similarity),
        "shortlist_rank": int(hit.shortlist_rank),
        "taken_at": hit.taken_at,
        "itm": None if hit.itm is None else float(hit.itm),
        "t": None if hit.t is None else float(hit.t),
        "duplicates": list(hit.duplicates),
        **({} if hit.explanation is None else {"explanation": explanation_record(hit.explanation)}),
    }


def frame_time_text(t: float) -> str:
    """A frame time as the table shows it: seconds with at most 3 decimals (`12.5s`)."""
    return f"{round(float(t), 3):g}s"


def explanation_record(explanation: Explanation) -> dict:
    """An explanation as jsonl carries it (only there: csv, tsv and the table leave it out), in the server's JSON
    form: the method, the maps' grid (rows, columns) and window over the image, the whole query's map, and
    [word, map] pairs in query order (maps row-major, peak 1)."""
    return json.loads(json.dumps(dataclasses.asdict(explanation)))  # tuples as the lists JSON reads back


def render(
    hits: Iterable[Hit], fmt: str, stream: TextIO, *, null_separated: bool = False, include_header: bool = True
) -> None:
    """Write one query's `hits` to `stream` in format `fmt` (see formats.render_records)."""
    records = (hit_record(hit) for hit in hits)
    if fmt in ("csv", "tsv"):
        records = ({**record, "duplicates": len(record["duplicates"])} for record in records)
    render_records(
        records,
        fmt,
        stream,
        columns=COLUMNS,
        table=TABLE,
        null_separated=null_separated,
        include_header=include_header,
        title=lambda record: record["query"],
    )


def write_query_output(
    results: Iterable[Iterable[Hit]], fmt: str, stream: TextIO, *, null_separated: bool = False
) -> None:
    """What `bt-search query` prints: each query's hits in turn under one csv/tsv header. File names that are
    not UTF-8 go out as their original bytes. Both the in-process search and the server fast path print this way."""
    stream.reconfigure(errors="surrogateescape")
    for position, hits in enumerate(results):
        header = position == 0 or fmt == "table"  # each query's table sizes its own columns: each has its header
        render(hits, fmt, stream, null_separated=null_separated, include_header=header)
    stream.flush()
