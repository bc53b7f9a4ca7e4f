"""When and with what a photo was taken: EXIF DateTimeOriginal (+ OffsetTimeOriginal), camera make and model.

`taken_at` is ISO 8601 local wall-clock time as the camera recorded it, with the UTC offset when the file
says it (`2021-07-04T10:11:12+02:00`), else without (`2021-07-04T10:11:12`); None when there is no usable
date. Query-time date filters on these values live in search/filters.py.
Only the file's header is parsed here, never its pixels, so re-reading EXIF of a whole library is cheap.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import BinaryIO

from PIL import Image

from bt_search.media import (
    images,  # noqa: F401 - registers HEIC/HEIF with Pillow, whose EXIF is read here too
    raw,
)

EXIF_IFD = 0x8769
MAKE, MODEL = 0x010F, 0x0110
DATE_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
_EXIF_DATE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET = re.compile(r"[+-](\d{2}):(\d{2})")
MAX_OFFSET_MINUTES = 14 * 60  # UTC-12:00 .. UTC+14:00 are the offsets in use


@dataclass(frozen=True)
class Capture:
    taken_at: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None

    def as_fields(self) -> dict[str, str | None]:
        return asdict(self)


def read_capture(source: str | os.PathLike[str] | BinaryIO, name: str | None = None) -> Capture:
    """The capture info in a file's EXIF; an empty Capture when there is none or it cannot be read.
    A RAW photo (by `name`, or the path given) is read where its format keeps EXIF (`read_raw_capture`)."""
    if raw.is_raw(name or (source if isinstance(source, (str, os.PathLike)) else "")):
        return read_raw_capture(source)
    try:
        with Image.open(source) as img:
            return capture_from_exif(img.getexif())
    except Exception:  # noqa: BLE001 - capture info is optional: a bad EXIF block never fails a file
        return Capture()


def read_raw_capture(source: str | os.PathLike[str] | BinaryIO) -> Capture:
    """The capture info of a RAW photo, from its bytes alone (no rawpy): the TIFF IFD0 and EXIF IFD of
    DNG, CR2, NEF, ARW, ORF and RW2, the EXIF of RAF's embedded JPEG, CR3's CMT1 and CMT2 boxes. The first
    `raw.EXIF_PREFIX_BYTES` of the file are read, and the whole file only when they hold no date."""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as file:
                return _raw_capture(file)
        return _raw_capture(source)
    except Exception:  # noqa: BLE001 - capture info is optional: a bad EXIF block never fails a file
        return Capture()


def _raw_capture(file: BinaryIO) -> Capture:
    start = file.tell()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data" for offsets past the prefix
        try:
            capture = _capture_of(raw.exif_streams(file, raw.EXIF_PREFIX_BYTES))
        except Exception:  # noqa: BLE001 - a prefix that cut an IFD: the whole file below
            capture = Capture()
        if capture.taken_at is None and file.seek(0, os.SEEK_END) - start > raw.EXIF_PREFIX_BYTES:
            file.seek(start)
            capture = _capture_of(raw.exif_streams(file, limit=None))
    return capture


def _capture_of(streams: raw.ExifStreams) -> Capture:
    if streams.jpeg is not None:
        return read_capture(io.BytesIO(streams.jpeg))
    if streams.tiff is None and streams.exif is None:
        return Capture()
    ifd0 = _tiff_exif(streams.tiff)
    sub = _tiff_exif(streams.exif) if streams.exif is not None else ifd0.get_ifd(EXIF_IFD)
    return Capture(
        iso_taken_at(sub.get(DATE_TIME_ORIGINAL), sub.get(OFFSET_TIME_ORIGINAL)),
        _text(ifd0.get(MAKE)),
        _text(ifd0.get(MODEL)),
    )


def _tiff_exif(stream: bytes | None) -> Image.Exif:
    """A TIFF stream's IFD0 (and the IFDs it points to) as Pillow's Exif; empty for None."""
    exif = Image.Exif()
    if stream:
        exif.load(stream)
    return exif


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
    return moment.isoformat() + _valid_offset(_text(offset))


def _valid_offset(offset: str | None) -> str:
    """An EXIF OffsetTimeOriginal that ISO 8601 can carry ("+02:00"); "" for a missing or impossible one
    ("+99:99"), which leaves the time local."""
    match = _EXIF_OFFSET.fullmatch(offset or "")
    if not match:
        return ""
    hours, minutes = map(int, match.groups())
    return offset if minutes < 60 and hours * 60 + minutes <= MAX_OFFSET_MINUTES else ""


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip("\x00 ").strip()
    return value or None
