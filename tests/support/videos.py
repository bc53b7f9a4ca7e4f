"""Tiny videos the tests encode themselves with PyAV: one synthetic scene per segment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Distinct scenes: background colour, shape colour, shape kind.
SCENES = (
    ((200, 30, 30), (250, 250, 80), "ellipse"),
    ((30, 160, 40), (20, 20, 120), "rectangle"),
    ((30, 60, 200), (255, 255, 255), "triangle"),
    ((240, 240, 240), (0, 0, 0), "cross"),
)


def scene(index: int, side: int = 64) -> Image.Image:
    """Scene `index` (of SCENES) as an RGB image `side` pixels square."""
    background, colour, kind = SCENES[index % len(SCENES)]
    img = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(img)
    a, b = side // 5, side - side // 5
    if kind == "ellipse":
        draw.ellipse([a, a, b, b], fill=colour)
    elif kind == "rectangle":
        draw.rectangle([a, side // 3, b, b], fill=colour)
    elif kind == "triangle":
        draw.polygon([(side // 2, a), (a, b), (b, b)], fill=colour)
    else:
        draw.rectangle([side // 2 - 4, a, side // 2 + 4, b], fill=colour)
        draw.rectangle([a, side // 2 - 4, b, side // 2 + 4], fill=colour)
    return img


def write_video(
    path: str | Path,
    scenes: Sequence[int] = (0, 1, 2),
    seconds_each: float = 2.0,
    fps: int = 4,
    side: int = 64,
    codec: str | None = None,
    creation_time: str | None = None,
) -> Path:
    """Encode `scenes` one after another, `seconds_each` seconds each, at `fps`; the container follows the
    suffix (.mp4, .mkv, .webm, .mov). Returns the path."""
    import av

    path = Path(path)
    codec = codec or ("libvpx" if path.suffix == ".webm" else "mpeg4")
    with av.open(str(path), "w") as container:
        if creation_time:
            container.metadata["creation_time"] = creation_time
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for index in scenes:
            pixels = np.asarray(scene(index, side))
            for _ in range(round(seconds_each * fps)):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_empty_video(path: str | Path, side: int = 64) -> Path:
    """A container with a video stream and no frame."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # the header, with no frame after it
        container.mux(stream.encode(None))
    return path


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut the file to `keep` of its bytes (an MP4 loses its index at the end)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def turn_mp4(path: str | Path, matrix: tuple[int, int, int, int]) -> Path:
    """Set the (a, b, c, d) of the first track's display matrix (16.16 fixed point, as `tkhd` stores it) of an MP4
    written by write_video: what a phone writes for a video held in portrait. (0, 1, -1, 0) is a quarter turn
    clockwise (FFmpeg reads it as rotation -90)."""
    import struct

    path = Path(path)
    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")
    version = data[box + 4]
    offset = box + 8 + (20 if version == 0 else 32) + 16  # version/flags, times and ids, reserved, layer..volume
    a, b, c, d = (value << 16 for value in matrix)
    data[offset : offset + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path
