"""RAW files the tests build themselves: minimal DNGs (a TIFF with DNG tags) written with struct.

A LinearRaw DNG (PhotometricInterpretation 34892: three samples per pixel, already demosaiced) is the simplest
file LibRaw decodes, and a CFA one (32803, an RGGB mosaic) what a camera writes. The colour matrix makes the
"camera" space linear sRGB, so LibRaw's output is the stored values through its white balance (1, 1, 1),
output gamma and brightness steps. A preview is a JPEG or an 8-bit RGB bitmap in a SubIFD (NewSubFileType 1),
where cameras put theirs; LibRaw's `extract_thumb` finds either."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

# TIFF tag -> (type, values); types: 1 BYTE, 2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL, 7 UNDEFINED, 10 SRATIONAL
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 10: 8}
NEW_SUBFILE_TYPE, IMAGE_WIDTH, IMAGE_LENGTH, BITS_PER_SAMPLE, COMPRESSION = 254, 256, 257, 258, 259
PHOTOMETRIC, MAKE, MODEL, STRIP_OFFSETS, ORIENTATION, SAMPLES_PER_PIXEL = 262, 271, 272, 273, 274, 277
ROWS_PER_STRIP, STRIP_BYTE_COUNTS, PLANAR_CONFIG, SUB_IFDS, EXIF_IFD = 278, 279, 284, 330, 34665
DATE_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 36867, 36881
DNG_VERSION, UNIQUE_CAMERA_MODEL, COLOR_MATRIX_1, AS_SHOT_NEUTRAL, WHITE_LEVEL = 50706, 50708, 50721, 50728, 50717
CALIBRATION_ILLUMINANT_1 = 50778
LINEAR_RAW, RGB, CFA = 34892, 2, 32803
CFA_REPEAT_PATTERN_DIM, CFA_PATTERN, CFA_PLANE_COLOR, CFA_LAYOUT = 33421, 33422, 50710, 50711
WHITE = 65535
# ColorMatrix1 (XYZ -> camera) of a "camera" whose native space is linear sRGB: LibRaw's camera-to-sRGB
# matrix is then the identity, and its output is the stored values through white balance (1, 1, 1) and gamma.
XYZ_TO_LINEAR_SRGB = (
    3.2404542,
    -1.5371385,
    -0.4985314,
    -0.9692660,
    1.8760108,
    0.0415560,
    0.0556434,
    -0.2040259,
    1.0572252,
)


def srgb_to_linear(pixels: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> linear [0, 1] floats."""
    x = pixels.astype(np.float64) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def write_linear_dng(
    path: Path,
    linear: np.ndarray,
    *,
    bayer: bool = False,
    orientation: int = 1,
    preview: Image.Image | None = None,
    preview_as_jpeg: bool = True,
    preview_orientation: int | None = None,
    taken: tuple[str, str | None] | None = None,
    make: str = "BTSearch",
    model: str = "Test DNG",
) -> Path:
    """A LinearRaw DNG of `linear` (H, W, 3 floats in [0, 1], stored as 16 bit), or with `bayer` an RGGB CFA
    DNG sampled from it (what a camera sensor records, demosaiced by LibRaw), with an optional preview:
    a JPEG in a SubIFD (`preview_as_jpeg`, with EXIF orientation `preview_orientation` if given) or an 8-bit
    RGB image in a SubIFD. `taken` is (DateTimeOriginal, OffsetTimeOriginal) for the EXIF IFD."""
    height, width = linear.shape[:2]
    values = np.clip(np.rint(linear * WHITE), 0, WHITE).astype("<u2")
    if bayer:  # an RGGB mosaic: each photosite keeps one colour, as a camera sensor does
        mosaic = values[:, :, 1].copy()
        mosaic[0::2, 0::2] = values[0::2, 0::2, 0]
        mosaic[1::2, 1::2] = values[1::2, 1::2, 2]
        values = mosaic
    raw = values.tobytes()
    main = {
        NEW_SUBFILE_TYPE: (4, [0]),
        IMAGE_WIDTH: (4, [width]),
        IMAGE_LENGTH: (4, [height]),
        BITS_PER_SAMPLE: (3, [16, 16, 16]),
        COMPRESSION: (3, [1]),
        PHOTOMETRIC: (3, [LINEAR_RAW]),
        MAKE: (2, make),
        MODEL: (2, model),
        ORIENTATION: (3, [orientation]),
        SAMPLES_PER_PIXEL: (3, [3]),
        ROWS_PER_STRIP: (4, [height]),
        PLANAR_CONFIG: (3, [1]),
        DNG_VERSION: (1, [1, 4, 0, 0]),
        UNIQUE_CAMERA_MODEL: (2, f"{make} {model}"),
        COLOR_MATRIX_1: (10, [(round(v * 10**7), 10**7) for v in XYZ_TO_LINEAR_SRGB]),
        CALIBRATION_ILLUMINANT_1: (3, [21]),  # D65
        AS_SHOT_NEUTRAL: (5, [(1, 1), (1, 1), (1, 1)]),
        WHITE_LEVEL: (4, [WHITE]),
    }
    blobs = {"main": raw}
    exif = None
    if bayer:
        main[BITS_PER_SAMPLE], main[SAMPLES_PER_PIXEL], main[PHOTOMETRIC] = (3, [16]), (3, [1]), (3, [CFA])
        main[CFA_REPEAT_PATTERN_DIM], main[CFA_PATTERN] = (3, [2, 2]), (1, [0, 1, 1, 2])
        main[CFA_PLANE_COLOR], main[CFA_LAYOUT] = (1, [0, 1, 2]), (3, [1])
    if taken is not None:
        exif = {DATE_TIME_ORIGINAL: (2, taken[0])}
        if taken[1]:
            exif[OFFSET_TIME_ORIGINAL] = (2, taken[1])
    sub = None
    if preview is not None:
        preview = preview.convert("RGB")
        sub = {
            NEW_SUBFILE_TYPE: (4, [1]),  # a reduced-resolution copy of the main image
            IMAGE_WIDTH: (4, [preview.width]),
            IMAGE_LENGTH: (4, [preview.height]),
            BITS_PER_SAMPLE: (3, [8, 8, 8]),
            PHOTOMETRIC: (3, [RGB]),
            SAMPLES_PER_PIXEL: (3, [3]),
            ROWS_PER_STRIP: (4, [preview.height]),
            PLANAR_CONFIG: (3, [1]),
        }
        if preview_as_jpeg:
            buffer = io.BytesIO()
            preview_exif = Image.Exif()
            if preview_orientation is not None:  # as cameras do: the preview's EXIF repeats the RAW's flag
                preview_exif[ORIENTATION] = preview_orientation
            preview.save(buffer, "JPEG", quality=95, exif=preview_exif.tobytes())
            blobs["sub"] = buffer.getvalue()
            sub[COMPRESSION] = (3, [7])  # new-style JPEG
        else:
            blobs["sub"] = preview.tobytes()
            sub[COMPRESSION] = (3, [1])
    path.write_bytes(_tiff(main, blobs, sub, exif))
    return path


def _tiff(main: dict, blobs: dict[str, bytes], sub: dict | None, exif: dict | None) -> bytes:
    """Little-endian TIFF: header, then IFD0 (+ SubIFD, + EXIF IFD), then the strips."""
    ifds = [("main", main)] + ([("sub", sub)] if sub else []) + ([("exif", exif)] if exif else [])
    # placeholders so every IFD's entry count is final before offsets are laid out
    if sub:
        main[SUB_IFDS] = (4, [0])
    if exif:
        main[EXIF_IFD] = (4, [0])
    for name, ifd in ifds:
        if name in blobs:
            ifd[STRIP_OFFSETS] = (4, [0])
            ifd[STRIP_BYTE_COUNTS] = (4, [len(blobs[name])])
    sizes = {name: _ifd_size(ifd) for name, ifd in ifds}
    offsets, cursor = {}, 8
    for name, _ in ifds:
        offsets[name] = cursor
        cursor += sizes[name]
    blob_offsets = {}
    for name, data in blobs.items():
        cursor += cursor % 2
        blob_offsets[name] = cursor
        cursor += len(data)
    if sub:
        main[SUB_IFDS] = (4, [offsets["sub"]])
    if exif:
        main[EXIF_IFD] = (4, [offsets["exif"]])
    for name, ifd in ifds:
        if name in blobs:
            ifd[STRIP_OFFSETS] = (4, [blob_offsets[name]])
    out = bytearray(b"II*\x00" + struct.pack("<I", offsets["main"]))
    for name, ifd in ifds:
        out += _ifd_bytes(ifd, offsets[name])
    for name, data in blobs.items():
        out += b"\x00" * (blob_offsets[name] - len(out))
        out += data
    return bytes(out)


def _values(kind: int, values) -> bytes:
    if kind == 2:
        return values.encode("ascii") + b"\x00"
    if kind in (1, 7):
        return bytes(values)
    if kind == 3:
        return struct.pack(f"<{len(values)}H", *values)
    if kind == 4:
        return struct.pack(f"<{len(values)}I", *values)
    fmt = "<ii" if kind == 10 else "<II"
    return b"".join(struct.pack(fmt, *pair) for pair in values)


def _ifd_size(ifd: dict) -> int:
    extra = sum(_padded(len(_values(k, v))) for k, v in ifd.values() if len(_values(k, v)) > 4)
    return 2 + 12 * len(ifd) + 4 + extra


def _padded(n: int) -> int:
    return n + n % 2


def _ifd_bytes(ifd: dict, offset: int) -> bytes:
    entries, extra = bytearray(), bytearray()
    extra_start = offset + 2 + 12 * len(ifd) + 4
    for tag in sorted(ifd):
        kind, values = ifd[tag]
        data = _values(kind, values)
        count = len(data) // _TYPE_SIZE[kind]
        if len(data) <= 4:
            entries += struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\x00")
        else:
            entries += struct.pack("<HHII", tag, kind, count, extra_start + len(extra))
            extra += data + b"\x00" * (len(data) % 2)
    return struct.pack("<H", len(ifd)) + bytes(entries) + b"\x00\x00\x00\x00" + bytes(extra)
