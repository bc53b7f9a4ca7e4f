"""Query-time date filters and date order: whole days of `taken_at` (EXIF capture time), else file mtime.

Date filters compare whole days: the `taken_at` day, else the file's modification day (local time). The
EXIF reading itself lives in media/exif.py (decode workers import that without pyarrow).
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date, datetime, timedelta

import pyarrow.compute as pc

from bt_search.errors import UsageError
from bt_search.media.exif import read_capture
from bt_search.search.hits import Hit

SORTS = ("relevance", "date")


def parse_day(value: str | None, parameter: str) -> date | None:
    """`value` as a day (YYYY-MM-DD); UsageError naming `parameter` otherwise."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"`{parameter}` takes a date as YYYY-MM-DD, not {value!r}") from None


def date_filter(after: date | None, before: date | None) -> pc.Expression | None:
    """Rows taken on `after` or later and on `before` or earlier (whole days); mtime when taken_at is null."""
    if after is None and before is None:
        return None
    if after and before and after > before:
        raise UsageError(f"`after` {after} is later than `before` {before}: no day can match")
    day = pc.utf8_slice_codeunits(pc.field("taken_at"), 0, 10)
    by_taken = by_mtime = pc.scalar(True)
    if after is not None:
        by_taken = by_taken & (day >= after.isoformat())
        by_mtime = by_mtime & (pc.field("mtime_ns") >= _local_midnight_ns(after))
    if before is not None:
        by_taken = by_taken & (day <= before.isoformat())
        by_mtime = by_mtime & (pc.field("mtime_ns") < _local_midnight_ns(before + timedelta(days=1)))
    return pc.if_else(pc.field("taken_at").is_valid(), by_taken, by_mtime)


def _local_midnight_ns(day: date) -> int:
    return int(datetime(day.year, day.month, day.day).astimezone().timestamp()) * 1_000_000_000


def hit_date(path: str, taken_at: str | None) -> str:
    """A sortable local date-time: taken_at's wall clock, else the file's mtime in local time ("" if gone)."""
    if taken_at:
        return taken_at[:19]
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime).isoformat(timespec="seconds")
    except OSError:
        return ""


def check_sort(sort: str) -> None:
    if sort not in SORTS:
        raise UsageError(f"`sort` must be {' or '.join(SORTS)}, not {sort!r}")


def dated_hits(hits: list[Hit], sort: str = "relevance") -> list[Hit]:
    """Hits with `taken_at` read from their files' EXIF (K header reads); `sort="date"`: oldest first.

    Ranks stay the relevance ranks, so a date-ordered list still shows how well each image matched.
    """
    check_sort(sort)
    dated = [replace(hit, taken_at=read_capture(hit.path).taken_at) for hit in hits]
    if sort == "date":
        dated.sort(key=lambda hit: (hit_date(hit.path, hit.taken_at), hit.rank))
    return dated
