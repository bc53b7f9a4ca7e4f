"""Camera RAW photos (DNG, CR2, CR3, NEF, ARW, ORF, RW2, RAF) through rawpy (LibRaw), the `[raw]` extra.

A RAW file becomes an image in one of two ways, chosen per file by `use_preview`:
- the camera's embedded preview (a JPEG or a bitmap, what `extract_thumb` returns) when it is at least the size
  the model's resize needs and has the RAW's shape: the camera's own rendering, and a JPEG decode instead of a
  demosaic;
- otherwise a half-size demosaic (`DEMOSAIC`): a quarter of the pixels, no interpolation, and still twice
  the model's input for any sensor.
Either way the image comes back in sensor orientation with the one EXIF orientation to apply (`oriented`):
the RAW's own flag (LibRaw's `sizes.flip`), so a preview is never turned by its own EXIF as well, and the
demosaic is asked not to turn (`user_flip=0`). Pixels are read through `images.load_rgb` only, so every path (indexing,
Ray, rerank, a query image, thumbnails) reads a RAW file the same way.

The capture date and camera are read from the file's bytes alone (`exif_streams`), with no rawpy: TIFF-based
RAWs (DNG, CR2, NEF, ARW, ORF, RW2) carry a TIFF IFD0 and EXIF IFD (ORF and RW2 under their own magic), RAF
an embedded JPEG with EXIF at a fixed header offset, and CR3 (ISO-BMFF) its IFD0 and EXIF IFD as the CMT1
and CMT2 boxes of Canon's uuid box.

rawpy is imported on first use only, so the rest of bt-search works without the extra; a RAW file met
without it is a failed row whose reason names the extra.
"""

from __future__ import annotations

import importlib
import io
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from bt_search.errors import ImageDecodeError
from bt_search.media.scan import RAW_EXTENSIONS

EXTRA_HINT = "pip install 'bt-search[raw]'"
MISSING_EXTRA = f"a RAW photo, and rawpy (the raw extra) is not installed: {EXTRA_HINT}"
# LibRaw's postprocess for RAWs whose preview is too small: camera white balance, 8 bits, sRGB, LibRaw's
# default BT.709 gamma and auto-brightness; `user_flip=0` leaves the turning to `oriented`.
DEMOSAIC = {"half_size": True, "use_camera_wb": True, "output_bps": 8, "user_flip": 0}
PREVIEW_ASPECT_TOLERANCE = 0.05  # a preview whose shape differs more (letterboxed, cropped) is not used
MAX_RAW_PIXELS = 4 * 89_478_485  # Pillow's bomb threshold, after the half-size demosaic's quarter
# LibRaw's flip code (bit 1: mirror left-right, 2: upside down, 4: transpose) -> EXIF orientation
_EXIF_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def is_raw(name: str | os.PathLike[str]) -> bool:
    """Whether a file name has a RAW extension (any case)."""
    return os.path.splitext(os.fspath(name))[1].lower() in RAW_EXTENSIONS


@dataclass(frozen=True)
class RawImage:
    """One RAW file's pixels before orientation: a preview JPEG to decode, or an RGB image."""

    size: tuple[int, int]  # the RAW's own (width, height), sensor orientation, as LibRaw crops it
    orientation: int  # EXIF orientation (1-8) to apply once, to either
    jpeg: bytes | None = None
    image: Image.Image | None = None


def rawpy_module(name: str) -> Any:
    """rawpy, or an ImageDecodeError for `name` that names the extra to install."""
    try:
        return importlib.import_module("rawpy")
    except ImportError:
        raise ImageDecodeError(name, MISSING_EXTRA) from None


def read_raw(
    source: str | os.PathLike[str] | BinaryIO, name: str, needed: Callable[[int, int], tuple[int, int]] | None
) -> RawImage:
    """Open one RAW file and take its preview or a half-size demosaic (`use_preview`). `needed(height, width)`
    gives the (height, width) the model's resize wants of an image of that size; None asks for the preview
    only when it is as large as the half-size demosaic would be. Raises ImageDecodeError."""
    rawpy = rawpy_module(name)
    try:
        with rawpy.imread(_readable(source)) as raw:
            width, height = raw.sizes.width, raw.sizes.height
            if width <= 0 or height <= 0:
                raise ImageDecodeError(name, f"invalid size {width}x{height}")
            if width * height > MAX_RAW_PIXELS:
                raise ImageDecodeError(name, f"decompression bomb refused ({width}x{height} pixels)")
            orientation = _EXIF_ORIENTATION.get(raw.sizes.flip, 1)
            need = needed(height, width) if needed is not None else ((height + 1) // 2, (width + 1) // 2)
            thumb = _thumb(raw, rawpy)
            if thumb is not None and use_preview(_thumb_size(thumb, rawpy), (width, height), need):
                if thumb.format == rawpy.ThumbFormat.JPEG:
                    return RawImage((width, height), orientation, jpeg=bytes(thumb.data))
                return RawImage((width, height), orientation, image=Image.fromarray(_rgb8(thumb.data)))
            pixels = raw.postprocess(**DEMOSAIC)
            return RawImage((width, height), orientation, image=Image.fromarray(_rgb8(pixels)))
    except rawpy.LibRawError as err:
        raise ImageDecodeError(name, f"not a RAW file LibRaw can read ({_libraw_reason(err)})") from None


def check_raw(source: str | os.PathLike[str] | BinaryIO, name: str) -> None:
    """Raise the ImageDecodeError `read_raw` would for a missing extra, a file LibRaw cannot open or a bad
    size, from the header alone (no unpacking)."""
    rawpy = rawpy_module(name)
    try:
        with rawpy.imread(_readable(source)) as raw:
            width, height = raw.sizes.width, raw.sizes.height
    except rawpy.LibRawError as err:
        raise ImageDecodeError(name, f"not a RAW file LibRaw can read ({_libraw_reason(err)})") from None
    if width <= 0 or height <= 0 or width * height > MAX_RAW_PIXELS:
        raise ImageDecodeError(name, f"invalid size {width}x{height}")


def use_preview(preview: tuple[int, int], raw: tuple[int, int], need: tuple[int, int]) -> bool:
    """Whether a preview of (width, height) `preview` stands in for a RAW of (width, height) `raw`: it has
    the RAW's shape, the same way round (within PREVIEW_ASPECT_TOLERANCE: not letterboxed, cropped or stored
    already turned, which the RAW's orientation would turn again), and each side is at least the resize target
    `need` (height, width) for the RAW's size, as JPEG draft decoding judges."""
    (pw, ph), (rw, rh) = preview, raw
    if min(pw, ph) <= 0 or min(rw, rh) <= 0:
        return False
    if abs((pw / ph) / (rw / rh) - 1) > PREVIEW_ASPECT_TOLERANCE:
        return False
    return ph >= need[0] and pw >= need[1]


def oriented(img: Image.Image, orientation: int) -> Image.Image:
    """`img` turned by EXIF orientation `orientation` (1-8; anything else leaves it as is)."""
    method = _TRANSPOSE.get(orientation)
    return img.transpose(method) if method is not None else img


def _readable(source: str | os.PathLike[str] | BinaryIO) -> str | BinaryIO:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else source


def _thumb(raw: Any, rawpy: Any) -> Any:
    try:
        return raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:  # a damaged preview: the demosaic may still work
        return None


def _thumb_size(thumb: Any, rawpy: Any) -> tuple[int, int]:
    """(width, height) of a preview, from its JPEG header or its bitmap; (0, 0) when unreadable."""
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            with Image.open(io.BytesIO(bytes(thumb.data))) as img:
                return img.size
        except Exception:  # noqa: BLE001 - an unreadable preview is simply not used
            return 0, 0
    data = np.asarray(thumb.data)
    return (data.shape[1], data.shape[0]) if data.ndim >= 2 else (0, 0)


def _rgb8(pixels: np.ndarray) -> np.ndarray:
    """LibRaw's HxWx{1,3} output (8 or 16 bit) as uint8 HxWx3."""
    pixels = np.asarray(pixels)
    if pixels.dtype == np.uint16:
        pixels = (pixels.astype(np.uint32) * 255 + 32767) // 65535
    pixels = pixels.astype(np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def _libraw_reason(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text[:1].lower() + text[1:] if text else text


# --- EXIF without rawpy: where each container keeps its TIFF streams ---

_TIFF_MAGICS = {
    b"II*\x00": None,
    b"MM\x00*": None,
    b"IIRO": b"II*\x00",  # Olympus ORF
    b"IIRS": b"II*\x00",  # Olympus ORF
    b"MMOR": b"MM\x00*",  # Olympus ORF, big-endian
    b"IIU\x00": b"II*\x00",  # Panasonic RW2
}
RAF_MAGIC = b"FUJIFILMCCD-RAW"
# EXIF sits near the start of a RAW file (IFD0 and the EXIF IFD, CR3's moov box): reading this much of the
# file finds it without reading the sensor data; a file where it does not is read again whole.
EXIF_PREFIX_BYTES = 1 << 20
MAX_RAF_JPEG_BYTES = 64 << 20
CANON_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")


@dataclass(frozen=True)
class ExifStreams:
    """Where a RAW file's capture info lies: `tiff`, a TIFF stream whose IFD0 holds Make and Model and points
    to the EXIF IFD; `exif`, a TIFF stream whose IFD0 is the EXIF IFD itself (CR3's CMT2); `jpeg`, a JPEG
    with an EXIF block (RAF)."""

    tiff: bytes | None = None
    exif: bytes | None = None
    jpeg: bytes | None = None


def exif_streams(file: BinaryIO, limit: int | None) -> ExifStreams:
    """Find a RAW file's EXIF (any of the formats RAW_EXTENSIONS names), reading from `file`'s position at
    most `limit` bytes (None: all) plus RAF's embedded JPEG; empty when none is found."""
    start = file.tell()
    data = file.read(-1 if limit is None else limit)
    head = data[:4]
    if head in _TIFF_MAGICS:
        patch = _TIFF_MAGICS[head]
        return ExifStreams(tiff=data if patch is None else patch + data[4:])
    if data.startswith(RAF_MAGIC) and len(data) >= 92:
        offset, length = struct.unpack(">II", data[84:92])
        if offset <= 0 or not 0 < length <= MAX_RAF_JPEG_BYTES:
            return ExifStreams()
        file.seek(start + offset)
        jpeg = file.read(length)
        return ExifStreams(jpeg=jpeg) if len(jpeg) == length else ExifStreams()
    if data[4:8] == b"ftyp":
        return _cr3_streams(data)
    return ExifStreams()


def _cr3_streams(data: bytes) -> ExifStreams:
    """CR3: moov > uuid(Canon) > CMT1 (IFD0), CMT2 (EXIF IFD), each a TIFF stream of its own."""
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for inner, istart, iend in _boxes(data, start, end):
            if inner == b"uuid" and data[istart : istart + 16] == CANON_UUID:
                found = {k: data[s:e] for k, s, e in _boxes(data, istart + 16, iend) if k in (b"CMT1", b"CMT2")}
                return ExifStreams(tiff=found.get(b"CMT1"), exif=found.get(b"CMT2"))
    return ExifStreams()


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """ISO-BMFF boxes in data[start:end]: (type, payload start, payload end); stops at a bad size."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, min(pos + size, end)  # a box cut off by a read prefix: what there is of it
        pos += size
