"""HEIC/HEIF (the iPhone default) decodes like every other format: pixels, EXIF orientation, bomb guard, indexing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bt_search.errors import ImageDecodeError
from bt_search.media import images
from bt_search.media.decoding import decode_record
from bt_search.media.images import load_rgb, preprocess
from bt_search.media.scan import FileRecord, has_image_extension
from tests.support.images import noise_image

ORIENTATION = 0x0112


def _smooth_photo(seed: int, width: int, height: int) -> Image.Image:
    """Photo-like content (a lossy codec is meant for it): blurred blocks rather than per-pixel noise."""
    from PIL import ImageFilter

    return noise_image(seed, width, height).filter(ImageFilter.GaussianBlur(2))


def test_heic_embeds_within_cosine_099_of_the_lossless_png(engine, tmp_path):
    assert has_image_extension("IMG_0001.HEIC") and has_image_extension("x.heif")
    pixels = []
    for seed in range(3):
        photo = _smooth_photo(seed, 160, 120)
        photo.save(tmp_path / f"{seed}.heic", quality=90)  # pillow-heif's encoder, registered by bt_search.media.images
        photo.save(tmp_path / f"{seed}.png")
        for name in (f"{seed}.heic", f"{seed}.png"):
            img, size = load_rgb(tmp_path / name)
            assert size == (160, 120) and img.mode == "RGB"
            pixels.append(preprocess(img, engine.preprocessing))
    embeddings = engine.encode_images(np.stack(pixels))
    heic, png = embeddings[0::2], embeddings[1::2]
    cosines = np.sum(heic * png, axis=1)
    assert cosines.min() >= 0.99
    assert np.sum(heic[0] * png[1]) < cosines.min(), "different photos differ, so the bound can fail"


def test_heic_orientation_matches_the_same_exif_orientation_in_png(tmp_path):
    photo = _smooth_photo(7, 96, 48)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # rotate 90° clockwise to view
    photo.save(tmp_path / "rotated.heic", quality=95, exif=exif.tobytes())
    photo.save(tmp_path / "rotated.png", exif=exif.tobytes())
    heic, _ = load_rgb(tmp_path / "rotated.heic")
    png, _ = load_rgb(tmp_path / "rotated.png")
    assert heic.size == png.size == (48, 96)
    assert np.abs(np.asarray(heic, np.float32) - np.asarray(png, np.float32)).mean() < 6


def test_heic_bomb_guard_and_decode_worker(tmp_path, monkeypatch):
    _smooth_photo(1, 64, 64).save(tmp_path / "a.heic", quality=80)
    stat = (tmp_path / "a.heic").stat()
    decoded = decode_record(FileRecord(str(tmp_path / "a.heic"), stat.st_size, stat.st_mtime_ns), _prep(), draft=True)
    assert not isinstance(decoded, tuple) and (decoded.width, decoded.height) == (64, 64)
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 64 - 1)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_rgb(tmp_path / "a.heic")


def _prep():
    return images.Preprocessing(size=64, crop=64)
