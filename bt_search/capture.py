"""When and with what a photo was taken: EXIF DateTimeOriginal (+ OffsetTimeOriginal), camera make and model.

`taken_at` is ISO 8601 local wall-clock time as the camera recorded it, with the UTC offset when the file
says it (`2021-07-04T10:11:12+02:00`), else without (`2021-07-04T10:11:12`); None when there is no usable
date. Date filters compare whole days: the `taken_at` day, else the file's modification day (local time).
Only the file's header is parsed here, never its pixels, so re-reading EXIF of a whole library is cheap.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, BinaryIO

from PIL import Image

from . import images  # noqa: F401 - registers HEIC/HEIF with Pillow, whose EXIF is read here too
from .errors import UsageError
from .hits import Hit

if TYPE_CHECKING:  # decode workers read EXIF through this module: they must not pay for pyarrow
    import pyarrow.compute as pc

SORTS = ("relevance", "date")

EXIF_IFD = 0x8769
MAKE, MODEL = 0x010F, 0x0110
DATE_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
_EXIF_DATE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")


@dataclass(frozen=True)
class Capture:
    taken_at: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None

    def as_fields(self) -> dict[str, str | None]:
        return asdict(self)


def read_capture(source: str | os.PathLike[str] | BinaryIO) -> Capture:
    """The capture info in a file's EXIF; an empty Capture when there is none or it cannot be read."""
    try:
        with Image.open(source) as img:
            return capture_from_exif(img.getexif())
    except Exception:  # noqa: BLE001 - capture info is optional: a bad EXIF block never fails a file
        return Capture()


def capture_from_exif(exif: Image.Exif) -> Capture:
    sub = exif.get_ifd(EXIF_IFD)
    return Capture(
        iso_taken_at(sub.get(DATE_TIME_ORIGINAL), sub.get(OFFSET_TIME_ORIGINAL)),
        _text(exif.get(MAKE)),
        _text(exif.get(MODEL)),
    )


def iso_taken_at(original: object, offset: object = None) -> str | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (+ "+HH:MM") -> ISO 8601; None for blank or impossible dates ("0000:00:00")."""
    match = _EXIF_DATE.match(_text(original) or "")
    if not match:
        return None
    try:
        moment = datetime(*map(int, match.groups()))
    except ValueError:
        return None
    offset = _text(offset)
    return moment.isoformat() + (offset if offset and _EXIF_OFFSET.fullmatch(offset) else "")


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip("\x00 ").strip()
    return value or None


def parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} takes a date as YYYY-MM-DD, not {value!r}") from None


def date_filter(after: date | None, before: date | None) -> pc.Expression | None:
    """Rows taken on `after` or later and on `before` or earlier (whole days); mtime when taken_at is null."""
    if after is None and before is None:
        return None
    if after and before and after > before:
        raise UsageError(f"--after {after} is later than --before {before}: no day can match")
    import pyarrow.compute as pc

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
        raise UsageError(f"--sort must be {' or '.join(SORTS)}, not {sort!r}")


def dated_hits(hits: list[Hit], sort: str = "relevance") -> list[Hit]:
    """Hits with `taken_at` read from their files' EXIF (K header reads); `sort="date"`: oldest first.

    Ranks stay the relevance ranks, so a date-ordered list still shows how well each image matched.
    """
    check_sort(sort)
    dated = [replace(hit, taken_at=read_capture(hit.path).taken_at) for hit in hits]
    if sort == "date":
        dated.sort(key=lambda hit: (hit_date(hit.path, hit.taken_at), hit.rank))
    return dated
