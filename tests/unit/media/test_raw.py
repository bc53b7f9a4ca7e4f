"""Camera RAW photos (the `[raw]` extra): DNGs the tests write themselves (tests/support/raw_files.py) go
through LibRaw as the indexer reads them: the same pixels as a PNG, the preview when it is big enough,
orientation applied once, the capture date; a corrupt RAW and a missing extra are failed rows with reasons."""

from __future__ import annotations

import io
import struct
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from bt_search.media import raw
from bt_search.media.decoding import decode_record
from bt_search.media.exif import read_capture
from bt_search.media.images import Preprocessing, check_image, load_rgb
from bt_search.media.scan import FileRecord, has_image_extension, scan
from tests.support.images import noise_image
from tests.support.raw_files import srgb_to_linear, write_linear_dng

rawpy = pytest.importorskip("rawpy")

ROTATE_CW = Image.Transpose.ROTATE_270  # what EXIF orientation 6 asks for


def _photo(seed: int, width: int, height: int) -> Image.Image:
    return noise_image(seed, width, height).filter(ImageFilter.GaussianBlur(2))


def _record(path) -> FileRecord:
    stat = path.stat()
    return FileRecord(str(path), stat.st_size, stat.st_mtime_ns)


def _mean_abs(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def _run_index(engine, root, index_dir):
    from bt_search.indexing.run import index_paths
    from bt_search.store import IndexIdentity, IndexReader, IndexWriter

    with IndexWriter.open(index_dir, IndexIdentity.of(engine)) as writer:
        index_paths([str(root)], writer, engine, workers=0, batch_size=4)
    return IndexReader.open(index_dir)


def test_the_scan_takes_raw_extensions_in_any_case(tmp_path):
    names = ["a.DNG", "b.cr2", "c.CR3", "d.Nef", "e.arw", "f.ORF", "g.rw2", "h.RAF", "i.xmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(item.path.rsplit("/", 1)[1] for item in scan([tmp_path])) == names[:-1]
    assert has_image_extension("IMG_0001.DNG") and raw.is_raw("x.Rw2") and not raw.is_raw("x.jpg")


def test_an_indexed_dng_embeds_as_librarys_own_output_saved_as_png(engine, tmp_path):
    """The honest "same pixels" check: LibRaw's half-size demosaic, written as PNG by the test, indexes to
    the same vector as the DNG (to float rounding). Against the sRGB PNG the DNG was made from, the pixels
    differ by LibRaw's output curve (BT.709 gamma 2.222/4.5, not sRGB's) and auto-brightness: about 7 levels
    in 255 on average, which moves the tiny model's embedding by less than 1e-2 in cosine."""
    folder = tmp_path / "photos"
    folder.mkdir()
    source = _photo(1, 160, 120)
    source.save(folder / "source.png")
    dng = write_linear_dng(folder / "shot.dng", srgb_to_linear(np.asarray(source)), taken=("2021:07:04 10:11:12", None))
    with rawpy.imread(str(dng)) as opened:
        Image.fromarray(opened.postprocess(**raw.DEMOSAIC)).save(folder / "librarys.png")
    _photo(2, 160, 120).save(folder / "other.png")

    reader = _run_index(engine, folder, tmp_path / "index")
    assert not reader.failed()
    rows = {reader.row(i).path.rsplit("/", 1)[1]: reader.row(i) for i in range(len(reader))}
    shot = rows["shot.dng"]
    assert (shot.width, shot.height, shot.taken_at) == (160, 120, "2021-07-04T10:11:12")
    np.testing.assert_allclose(shot.embedding, rows["librarys.png"].embedding, atol=1e-6)
    same = float(shot.embedding @ rows["source.png"].embedding)
    assert same >= 0.99
    assert float(shot.embedding @ rows["other.png"].embedding) < same, "different photos differ: the bound can fail"


def test_the_preview_is_used_when_it_covers_the_resize_target_and_the_demosaic_otherwise(tmp_path):
    sensor, preview = _photo(1, 160, 120), _photo(2, 96, 72)
    for as_jpeg in (True, False):  # a JPEG preview, and a bitmap one (LibRaw's two kinds)
        dng = write_linear_dng(
            tmp_path / f"p{as_jpeg}.dng", srgb_to_linear(np.asarray(sensor)), preview=preview, preview_as_jpeg=as_jpeg
        )
        small, size = load_rgb(dng, prep=Preprocessing(size=64, crop=64))  # resize target 64x64 <= 96x72
        assert size == (160, 120) and small.size == (96, 72)
        assert _mean_abs(small, preview) < 4  # JPEG quality 95; the bitmap is exact
        big, size = load_rgb(dng, prep=Preprocessing(size=96, crop=96))  # target 96x128 > 96x72
        assert size == (160, 120) and big.size == (160, 120) and _mean_abs(big, sensor) < 10
    unsized, _ = load_rgb(dng)  # no target: the preview when it is at least the half-size demosaic (80x60)
    assert unsized.size == (96, 72)


def test_a_bayer_dng_is_demosaiced_at_half_size_and_keeps_its_sensor_size(tmp_path):
    sensor = _photo(7, 160, 120)
    dng = write_linear_dng(tmp_path / "cfa.dng", srgb_to_linear(np.asarray(sensor)), bayer=True, orientation=6)
    img, size = load_rgb(dng, prep=Preprocessing(size=64, crop=64))
    assert size == (160, 120) and img.size == (60, 80)  # half of each side, turned once
    expected = sensor.transpose(ROTATE_CW).resize((60, 80), Image.Resampling.BOX)
    assert _mean_abs(img, expected) < 16  # one sample per 2x2 block per colour, and LibRaw's curve
    assert _mean_abs(img, _photo(8, 160, 120).transpose(ROTATE_CW).resize((60, 80))) > 30


def test_use_preview_judges_size_and_shape():
    assert raw.use_preview((1616, 1080), (6000, 4000), need=(384, 576))
    assert raw.use_preview((1080, 720), (6000, 4000), need=(704, 1056)), "exactly the resize target"
    assert not raw.use_preview((1056, 704), (6000, 4000), need=(720, 1080)), "a few pixels short"
    assert not raw.use_preview((1080, 1616), (6000, 4000), need=(384, 576)), "stored turned: would turn twice"
    assert not raw.use_preview((320, 213), (6000, 4000), need=(384, 576)), "too small"
    assert not raw.use_preview((1920, 1080), (6000, 4000), need=(384, 576)), "16:9 for a 3:2 sensor"
    assert not raw.use_preview((0, 0), (6000, 4000), need=(384, 576))


@pytest.mark.parametrize("with_preview", [True, False])
def test_orientation_is_applied_once(tmp_path, with_preview):
    """The DNG says orientation 6 and so does its preview JPEG's own EXIF, as cameras write them: the image
    turns 90 degrees clockwise once, whichever source is read."""
    sensor, preview = _photo(3, 160, 120), _photo(4, 96, 72)
    dng = write_linear_dng(
        tmp_path / "turned.dng",
        srgb_to_linear(np.asarray(sensor)),
        orientation=6,
        preview=preview if with_preview else None,
        preview_orientation=6,
    )
    img, size = load_rgb(dng, prep=Preprocessing(size=64, crop=64))
    expected = (preview if with_preview else sensor).transpose(ROTATE_CW)
    assert size == (160, 120) and img.size == expected.size
    assert _mean_abs(img, expected) < (4 if with_preview else 10)
    assert _mean_abs(img, expected.transpose(Image.Transpose.ROTATE_180)) > 30, "turned twice would differ"


def test_a_corrupt_raw_is_a_failed_row_with_its_reason(engine, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "broken.NEF").write_bytes(np.random.default_rng(0).bytes(4096))
    _photo(1, 64, 48).save(folder / "fine.png")
    reader = _run_index(engine, folder, tmp_path / "index")
    assert [p.rsplit("/", 1)[1] for p in reader.paths] == ["fine.png"]
    (failed,) = reader.failed()
    assert failed.path.endswith("broken.NEF") and "not a RAW file LibRaw can read" in failed.reason


def test_without_the_extra_a_raw_file_fails_naming_it_and_the_rest_is_indexed(engine, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    write_linear_dng(folder / "shot.dng", srgb_to_linear(np.asarray(_photo(1, 64, 48))))
    _photo(2, 64, 48).save(folder / "fine.png")
    monkeypatch.setitem(sys.modules, "rawpy", None)  # `import rawpy` now raises ImportError
    reader = _run_index(engine, folder, tmp_path / "index")
    assert [p.rsplit("/", 1)[1] for p in reader.paths] == ["fine.png"]
    (failed,) = reader.failed()
    assert failed.path.endswith("shot.dng") and "pip install 'bt-search[raw]'" in failed.reason
    with pytest.raises(Exception, match=r"bt-search\[raw\]"):
        check_image(folder / "shot.dng")  # a query image says the same


def test_decode_record_reads_a_raw_like_load_rgb(tmp_path):
    dng = write_linear_dng(tmp_path / "a.dng", srgb_to_linear(np.asarray(_photo(5, 160, 120))), orientation=6)
    prep = Preprocessing(size=64, crop=64)
    decoded = decode_record(_record(dng), prep, draft=True)
    assert not isinstance(decoded, tuple) and (decoded.width, decoded.height) == (160, 120)
    img, _ = load_rgb(dng, prep=prep)
    from bt_search.media.images import resize_and_crop

    np.testing.assert_array_equal(decoded.pixels, resize_and_crop(img, prep))


# --- capture date and camera where each RAW format keeps its EXIF (no rawpy needed) ---


def _tiff_stream(tags: dict[int, str], exif_ifd: dict[int, str] | None = None) -> bytes:
    exif = Image.Exif()
    exif.endian = "<"  # little-endian, as RW2 always is
    for tag, value in tags.items():
        exif[tag] = value
    if exif_ifd:
        sub = exif.get_ifd(0x8769)
        sub.update(exif_ifd)
    return exif.tobytes()[6:]  # drop "Exif\0\0": a bare TIFF stream, "II*\0" first


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_capture_of_orf_rw2_raf_and_cr3_containers(tmp_path):
    when, offset = "2019:05:06 07:08:09", "-03:00"
    tiff = _tiff_stream({0x010F: "OM", 0x0110: "E-M1"}, {0x9003: when, 0x9011: offset})
    (tmp_path / "a.orf").write_bytes(b"IIRO" + tiff[4:])
    (tmp_path / "a.rw2").write_bytes(b"IIU\x00" + tiff[4:])
    jpeg = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "FUJIFILM", "X-T5"
    exif.get_ifd(0x8769)[0x9003] = when
    Image.new("RGB", (8, 8)).save(jpeg, "JPEG", exif=exif.tobytes())
    header = raw.RAF_MAGIC.ljust(84, b"0")
    (tmp_path / "a.raf").write_bytes(header + struct.pack(">II", 92, len(jpeg.getvalue())) + jpeg.getvalue())
    canon = raw.CANON_UUID + _box(b"CMT1", _tiff_stream({0x010F: "Canon", 0x0110: "EOS R5"}))
    canon += _box(b"CMT2", _tiff_stream({0x9003: when, 0x9011: offset}))
    (tmp_path / "a.cr3").write_bytes(_box(b"ftyp", b"crx \x00\x00\x00\x01") + _box(b"moov", _box(b"uuid", canon)))

    captures = {p.suffix: read_capture(p) for p in sorted(tmp_path.iterdir())}
    assert captures[".orf"].as_fields() == {
        "taken_at": "2019-05-06T07:08:09-03:00",
        "camera_make": "OM",
        "camera_model": "E-M1",
    }
    assert captures[".rw2"] == captures[".orf"]
    assert (captures[".raf"].taken_at, captures[".raf"].camera_model) == ("2019-05-06T07:08:09", "X-T5")
    assert captures[".cr3"].as_fields() == {
        "taken_at": "2019-05-06T07:08:09-03:00",
        "camera_make": "Canon",
        "camera_model": "EOS R5",
    }
    (tmp_path / "junk.cr3").write_bytes(b"\x00\x00\x00\x10ftypjunk" + b"\xff" * 40)
    assert read_capture(tmp_path / "junk.cr3").taken_at is None


def test_the_contact_sheet_and_page_thumbnail_of_a_raw_is_its_upright_image(tmp_path):
    from bt_search.output.html_sheet import make_thumbnail

    sensor = _photo(6, 160, 120)
    dng = write_linear_dng(tmp_path / "a.dng", srgb_to_linear(np.asarray(sensor)), orientation=6)
    with Image.open(io.BytesIO(make_thumbnail(str(dng), thumb_px=80, max_bytes=50_000))) as thumb:
        assert thumb.size == (60, 80)
        expected = sensor.transpose(ROTATE_CW).resize((60, 80))
        assert _mean_abs(thumb.convert("RGB"), expected) < 12


def test_capture_is_read_from_the_file_start_and_from_the_whole_file_when_it_lies_further(tmp_path, monkeypatch):
    dng = write_linear_dng(
        tmp_path / "a.dng", srgb_to_linear(np.asarray(_photo(1, 64, 48))), taken=("2022:02:03 04:05:06", "+09:00")
    )
    assert read_capture(dng).taken_at == "2022-02-03T04:05:06+09:00"
    with dng.open("rb") as file:  # the first KiB holds IFD0 and the EXIF IFD: the prefix alone finds them
        assert read_capture(io.BytesIO(file.read(1024)), name="a.dng").taken_at == "2022-02-03T04:05:06+09:00"
    monkeypatch.setattr(raw, "EXIF_PREFIX_BYTES", 16)  # now the prefix cuts IFD0 off: the whole file is read
    assert read_capture(dng).as_fields() == {
        "taken_at": "2022-02-03T04:05:06+09:00",
        "camera_make": "BTSearch",
        "camera_model": "Test DNG",
    }
