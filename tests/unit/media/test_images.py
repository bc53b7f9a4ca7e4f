"""Decoding and preprocessing: awkward files decode, hostile ones fail with a reason, pixels equal the processor."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bt_search.engine.loading import load_engine
from bt_search.errors import ImageDecodeError
from bt_search.media.images import Preprocessing, load_pixels, load_rgb, preprocess, resized_shape
from tests.support.hostile import write_hostile_files, write_real_world_files
from tests.support.images import noise_image
from tests.support.reference import reference_processor

PREP = Preprocessing(size=64, crop=64)


@pytest.mark.parametrize(
    "height,width,size",
    [(480, 640, 288), (640, 480, 288), (1200, 1600, 294), (100, 100, 48), (300, 1000, 64), (3000, 1000, 288)],
)
def test_resize_arithmetic_equals_the_processor_where_it_works(height, width, size):
    from transformers.models.bridgetower.image_processing_pil_bridgetower import get_resize_output_image_size

    expected = get_resize_output_image_size(
        np.zeros((3, height, width)), shorter=size, longer=int(1333 / 800 * size), size_divisor=32
    )
    assert resized_shape(height, width, Preprocessing(size=size, crop=size)) == expected


@pytest.mark.parametrize(
    "height,width,size", [(5000, 200, 48), (120, 6000, 288), (37, 1000, 64), (5000, 200, 288), (1, 4000, 32)]
)
def test_extreme_aspect_ratios_keep_a_nonzero_side(height, width, size):
    prep = Preprocessing(size=size, crop=size)
    new_h, new_w = resized_shape(height, width, prep)
    assert new_h >= 1 and new_w >= 1
    pixels = preprocess(noise_image(0, width, height), prep)
    assert pixels.shape == (3, size, size) and np.isfinite(pixels).all()


def test_real_world_files_decode_to_rgb(tmp_path):
    for name, path in write_real_world_files(tmp_path).items():
        img, size = load_rgb(path)
        assert img.mode == "RGB", name
        with Image.open(path) as original:
            assert size == original.size, name


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    path = write_real_world_files(tmp_path)["16-bit grey png"]
    img, _ = load_rgb(path)
    row = np.asarray(img)[30, :, 0]
    assert row[0] < 10 and row[-1] > 245 and len(np.unique(row)) > 20  # a ramp, not a white sheet


def test_transparency_is_composited_over_white(tmp_path):
    path = write_real_world_files(tmp_path)["transparent png"]
    img, _ = load_rgb(path)
    assert np.asarray(img)[:, 0].min() == 255  # alpha 0 in the first column: pure white


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    noise_image(0, 80, 40).save(path, "JPEG", exif=exif)
    img, size = load_rgb(path)
    assert img.size == (40, 80) and size == (80, 40)


@pytest.mark.parametrize(
    "name,reason",
    [
        ("truncated", "truncated or corrupt"),
        ("empty", "not an image"),
        ("text named jpg", "not an image"),
        ("random bytes", "not an image"),
        ("bomb", "decompression bomb"),
    ],
)
def test_hostile_files_fail_with_a_reason_naming_the_file(tmp_path, name, reason):
    path = write_hostile_files(tmp_path)[name]
    with pytest.raises(ImageDecodeError) as info:
        load_pixels(path, PREP)
    assert reason in info.value.reason and info.value.path == str(path)


def test_lossless_files_equal_the_processor_pixels(tiny_checkpoint, tmp_path):
    engine = load_engine(str(tiny_checkpoint), device="cpu")
    processor = reference_processor(tiny_checkpoint)
    for i, (w, h) in enumerate([(64, 64), (150, 90), (90, 150)]):
        path = tmp_path / f"{i}.png"
        noise_image(i, w, h).save(path)
        ours, _ = load_pixels(path, engine.preprocessing)
        with Image.open(path) as img:
            expected = processor.image_processor(images=[img.convert("RGB")], return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_jpeg_draft_decoding_stays_close_to_full_decoding(tiny_checkpoint, tmp_path):
    engine = load_engine(str(tiny_checkpoint), device="cpu")
    path = tmp_path / "photo.jpg"
    noise_image(3, 1600, 1200).save(path, "JPEG", quality=90)
    drafted, _ = load_pixels(path, engine.preprocessing, draft=True)
    full, _ = load_pixels(path, engine.preprocessing, draft=False)
    assert not np.array_equal(drafted, full), "draft mode must actually engage for a 1600x1200 JPEG"
    a, b = engine.encode_images(np.stack([drafted, full]))
    assert float(a @ b) >= 0.99
