"""Builders for real-world and hostile image files, shared by decoding and indexing tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.images import noise_image


def png_bomb_header(width: int = 60000, height: int = 60000) -> bytes:
    """A PNG whose IHDR claims a huge size, with a tiny IDAT: decoding it for real would need gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def write_real_world_files(folder: Path) -> dict[str, Path]:
    """Awkward but valid images that must be indexed, keyed by a short description."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["cmyk jpeg"] = folder / "cmyk.jpg"
    noise_image(1, 90, 70).convert("CMYK").save(files["cmyk jpeg"], "JPEG")
    files["16-bit grey png"] = folder / "grey16.png"
    ramp = np.tile(np.linspace(0, 65535, 80), (60, 1)).astype(np.uint16)  # dark left, bright right
    Image.fromarray(ramp).save(files["16-bit grey png"])  # uint16 -> mode I;16
    files["palette png"] = folder / "palette.png"
    noise_image(2, 64, 64).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(files["palette png"])
    files["transparent png"] = folder / "transparent.png"
    rgba = noise_image(3, 64, 64).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))))
    rgba.save(files["transparent png"])
    files["transparent gif"] = folder / "transparent.gif"
    gif = noise_image(4, 50, 40).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    gif.save(files["transparent gif"], transparency=0)
    files["phone screenshot"] = folder / "screenshot.png"
    noise_image(5, 200, 5000).save(files["phone screenshot"])
    files["banner"] = folder / "banner.webp"
    noise_image(6, 6000, 120).save(files["banner"], "WEBP")
    files["bmp"] = folder / "plain.bmp"
    noise_image(7, 40, 30).save(files["bmp"])
    files["tiff"] = folder / "plain.tiff"
    noise_image(8, 40, 30).save(files["tiff"])
    return files


def write_hostile_files(folder: Path) -> dict[str, Path]:
    """Files that must be skipped with a reason, keyed by a short description."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    good = folder / "_source.jpg"
    noise_image(9, 200, 150).save(good, "JPEG")
    data = good.read_bytes()
    good.unlink()
    files["truncated"] = folder / "truncated.jpg"
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["empty"] = folder / "empty.png"
    files["empty"].write_bytes(b"")
    files["text named jpg"] = folder / "notes.jpg"
    files["text named jpg"].write_text("these are my holiday notes, not a photo\n")
    files["random bytes"] = folder / "noise.png"
    files["random bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["bomb"] = folder / "bomb.png"
    files["bomb"].write_bytes(png_bomb_header())
    return files
