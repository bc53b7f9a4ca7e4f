"""Files to model-ready pixels: open, decode (EXIF, any mode to RGB, JPEG draft), preprocess.

Preprocessing reproduces the checkpoint's own `BridgeTowerImageProcessor` (PIL backend): resize the short side
to `size` (long side capped at 1333/800 of it), floor both sides to `size_divisor`, centre-crop (zero-padding
when smaller) to the crop size, scale to [0, 1], normalise. Two departures, both where the stock processor
breaks: the crop is always the model's `vision_config.image_size` (hub repos ship no crop size), and a side
that floors to 0 at extreme aspect ratios keeps its rounded length (at least 1 px) instead of crashing.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from bt_search.errors import ImageDecodeError
from bt_search.media import raw


def _register_heif() -> None:
    """Teach Pillow HEIC/HEIF (iPhone photos) once per process: decode workers import this module too.

    libheif applies the container's rotation while decoding, and pillow-heif resets the EXIF orientation to
    1 to match, so `exif_transpose` below never turns a HEIC twice; the bomb guard sees the size first.
    """
    from pillow_heif import register_heif_opener

    register_heif_opener()


_register_heif()

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_PIXELS = 89_478_485  # Pillow's own bomb threshold; anything larger is refused, not decoded
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@dataclass(frozen=True)
class Preprocessing:
    size: int  # target short side before cropping
    crop: int  # square side the vision tower takes
    size_divisor: int = 32
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resample: int = Image.Resampling.BICUBIC
    rescale_factor: float = 1 / 255

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def preprocessing_from_checkpoint(checkpoint_dir: str | Path, image_size: int) -> Preprocessing:
    """Read the checkpoint's processor config (either layout); fill what it lacks with the processor's defaults."""
    raw = _read_image_processor_config(Path(checkpoint_dir))
    size = raw.get("size", image_size)
    if isinstance(size, dict):
        size = size.get("shortest_edge") or size.get("height") or image_size
    return Preprocessing(
        size=int(size),
        crop=int(image_size),
        size_divisor=int(raw.get("size_divisor", 32)),
        mean=tuple(raw.get("image_mean", CLIP_MEAN)),
        std=tuple(raw.get("image_std", CLIP_STD)),
        resample=int(raw.get("resample", Image.Resampling.BICUBIC)),
        rescale_factor=float(raw.get("rescale_factor", 1 / 255)),
    )


def _read_image_processor_config(checkpoint_dir: Path) -> dict:
    for name in PROCESSOR_FILES:
        path = checkpoint_dir / name
        if path.is_file():
            data = json.loads(path.read_text())
            return data.get("image_processor", data)
    return {}


def resized_shape(height: int, width: int, prep: Preprocessing) -> tuple[int, int]:
    """The processor's resize arithmetic, with sides that would floor to 0 kept at their rounded length."""
    shorter, longer = prep.size, int(1333 / 800 * prep.size)
    scale = shorter / min(height, width)
    new_h, new_w = (shorter, scale * width) if height < width else (scale * height, shorter)
    if max(new_h, new_w) > longer:
        shrink = longer / max(new_h, new_w)
        new_h, new_w = shrink * new_h, shrink * new_w
    return _floor_to_divisor(int(new_h + 0.5), prep.size_divisor), _floor_to_divisor(
        int(new_w + 0.5), prep.size_divisor
    )


def _floor_to_divisor(length: int, divisor: int) -> int:
    floored = length // divisor * divisor
    return floored if floored > 0 else max(length, 1)


def load_rgb(
    source: str | Path | BinaryIO,
    draft_for: Preprocessing | None = None,
    name: str | None = None,
    *,
    prep: Preprocessing | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Open and fully decode one image (a path, or a file object named `name`) as RGB, EXIF orientation applied.

    Raises ImageDecodeError naming the file.

    Returns the image and the file's own (width, height), before any draft reduction.

    With `draft_for`, a JPEG at least twice the target size is decoded at a reduced DCT scale (JPEG draft
    mode), which is several times faster for camera photos and changes embeddings only slightly.

    A RAW photo (by its name's extension) goes through `raw.read_raw`: its embedded preview when that is at
    least the resize target for `prep` (or `draft_for`), else a half-size demosaic.
    """
    path = name or str(source)
    if raw.is_raw(path):
        return _load_raw(source, draft_for, prep or draft_for, path)
    with _decode_errors(path), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(source) as img:
            _refuse_bombs(img, path)
            original_size = img.size
            if draft_for is not None and img.format == "JPEG":
                _apply_draft(img, draft_for)
            img.load()
            return to_rgb(ImageOps.exif_transpose(img)), original_size


def check_image(path: str | Path) -> None:
    """Raise the ImageDecodeError `load_rgb` would for a file that is missing, unreadable, not an image or too
    large, from its header alone (no decoding, no model: a caller can refuse a bad file first)."""
    if raw.is_raw(path):
        with _decode_errors(str(path)):
            raw.check_raw(path, str(path))
        return
    with _decode_errors(str(path)), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            _refuse_bombs(img, str(path))


def _load_raw(
    source: str | Path | BinaryIO, draft_for: Preprocessing | None, target: Preprocessing | None, path: str
) -> tuple[Image.Image, tuple[int, int]]:
    """A RAW photo as `load_rgb` returns any image: its preview JPEG decoded as a JPEG is (bomb guard, draft)
    but turned by the RAW's own orientation, not the preview's EXIF; or LibRaw's RGB, turned the same way."""
    needed = (lambda height, width: resized_shape(height, width, target)) if target is not None else None
    with _decode_errors(path), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        found = raw.read_raw(source, path, needed)
        if found.jpeg is None:
            return raw.oriented(to_rgb(found.image), found.orientation), found.size
        with Image.open(io.BytesIO(found.jpeg)) as img:
            _refuse_bombs(img, path)
            if draft_for is not None and img.format == "JPEG":
                _apply_draft(img, draft_for)
            img.load()
            return raw.oriented(to_rgb(img), found.orientation), found.size


@contextmanager
def _decode_errors(path: str) -> Iterator[None]:
    """Whatever opening or decoding raises, as an ImageDecodeError naming `path` with a short reason."""
    try:
        yield
    except ImageDecodeError:
        raise
    except (
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as err:  # Pillow's own check, kept as backstop
        raise ImageDecodeError(str(path), f"decompression bomb refused ({err})") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(str(path), "not an image Pillow can read") from None
    except FileNotFoundError:
        raise ImageDecodeError(str(path), "file not found (moved or deleted?)") from None
    except PermissionError:
        raise ImageDecodeError(str(path), "permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageDecodeError(str(path), f"truncated or corrupt image ({err})") from None


def _refuse_bombs(img: Image.Image, path: str) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(path, f"invalid size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(path, f"decompression bomb refused ({width}x{height} pixels)")


def _apply_draft(img: Image.Image, prep: Preprocessing) -> None:
    target_h, target_w = resized_shape(img.height, img.width, prep)
    if img.width >= 2 * target_w and img.height >= 2 * target_h:
        img.draft("RGB", (target_w, target_h))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: transparency over white, 16-bit depth scaled (not clipped) to 8-bit."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        img = Image.fromarray(np.clip(array * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img if img.mode == "RGB" else img.convert("RGB")


def preprocess(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """An RGB image to normalised float32 CHW pixels of shape (3, crop, crop)."""
    return normalize(resize_and_crop(img, prep), prep)


def resize_and_crop(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """The processor's geometry alone: uint8 HWC pixels of shape (crop, crop, 3).

    Decode workers hand these over (a quarter of the float32 bytes); `normalize` (or the engine, on its
    device) does the arithmetic.
    """
    height, width = resized_shape(img.height, img.width, prep)
    pixels = np.asarray(img.resize((width, height), resample=prep.resample), dtype=np.uint8)
    return center_crop(pixels, prep.crop)


def normalize(crops: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 [..., H, W, 3] crops -> float32 [..., 3, H, W], the processor's arithmetic.

    Same order and precision as the processor: rescale in float64, then normalise in float32.
    """
    scaled = (crops.astype(np.float64) * prep.rescale_factor).astype(np.float32)
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis((scaled - mean) / std, -1, -3))


def center_crop(pixels: np.ndarray, crop: int) -> np.ndarray:
    """Centre-crop HWC pixels to crop×crop, zero-padding (centred, extra pixel after) where smaller."""
    height, width = pixels.shape[:2]
    out = np.zeros((crop, crop, pixels.shape[2]), dtype=pixels.dtype)
    src_top, dst_top, rows = _crop_span(height, crop)
    src_left, dst_left, cols = _crop_span(width, crop)
    out[dst_top : dst_top + rows, dst_left : dst_left + cols] = pixels[
        src_top : src_top + rows, src_left : src_left + cols
    ]
    return out


def _crop_span(length: int, crop: int) -> tuple[int, int, int]:
    """(source start, destination start, count) along one axis."""
    if length >= crop:
        return (length - crop) // 2, 0, crop
    return 0, -(-(crop - length) // 2), length


def load_pixels(path: str | Path, prep: Preprocessing, draft: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode + preprocess one file. Returns (pixels, the file's (width, height))."""
    img, original_size = load_rgb(path, draft_for=prep if draft else None, prep=prep)
    return preprocess(img, prep), original_size
