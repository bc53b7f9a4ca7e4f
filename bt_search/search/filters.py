"""Query-time date filters and date order: whole days of `taken_at` (EXIF capture time), else file mtime.

Date filters compare whole days: the `taken_at` day, else the file's modification day (local time). The
EXIF reading itself lives in media/exif.py (decode workers import that without pyarrow).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import date, datetime

import pyarrow.compute as pc

from bt_search.errors import UsageError
from bt_search.media.exif import read_capture
from bt_search.search.hits import Hit

SORTS = ("relevance", "date")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
DAY_NS = 86_400 * 1_000_000_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_day(value: str | None, parameter: str) -> date | None:
    """`value` as a day (YYYY-MM-DD); UsageError naming `parameter` otherwise."""
    if value is None:
        return None
    try:
        if not _DAY.fullmatch(value):  # fromisoformat also takes 20210101 and 2021-W01-1
            raise ValueError(value)
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
        by_mtime = by_mtime & (pc.field("mtime_ns") < _clamped(_local_midnight_ns(before) + DAY_NS))
    return pc.if_else(pc.field("taken_at").is_valid(), by_taken, by_mtime)


def _local_midnight_ns(day: date) -> int:
    """Local midnight at the start of `day`, in ns since the epoch, clamped to mtime_ns's int64 range: any
    day from 0001 to 9999 can be asked for, though int64 nanoseconds span only 1677 to 2262."""
    try:
        seconds = datetime(day.year, day.month, day.day).astimezone().timestamp()
    except (OverflowError, ValueError, OSError):  # no time zone data so far from now: UTC is as good
        seconds = (day - date(1970, 1, 1)).days * 86_400
    return _clamped(int(seconds) * 1_000_000_000)


def _clamped(ns: int) -> int:
    return max(INT64_MIN, min(INT64_MAX, ns))


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
    dated = [replace(hit, taken_at=_capture(hit.path).taken_at) for hit in hits]
    if sort == "date":
        dated.sort(key=lambda hit: (hit_date(hit.path, hit.taken_at), hit.rank))
    return dated


def _capture(path: str):
    """A hit's capture info: EXIF, or a video container's metadata (as the indexer read them)."""
    from bt_search.media.video_reading import is_video

    if is_video(path):
        from bt_search.media.video import read_video_capture

        return read_video_capture(path)
    return read_capture(path)
