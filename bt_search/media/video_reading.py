"""Reading videos with PyAV (the optional `video` extra): which files are videos, opening one, and the frame at a
time, for indexing (media/video.py), the rerank and thumbnails alike.

Imports nothing but the standard library here, and PyAV and Pillow when a video is read: the light query path
(scan's extension list, a served query's contact sheet) loads it without numpy.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import TYPE_CHECKING

from bt_search.errors import ImageDecodeError
from bt_search.media.file_reading import file_sha256, is_url, read_file_bytes

VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm"})
EXTRA_MISSING = "a video, and the `video` extra is not installed (pip install 'bt-search[video]')"
if TYPE_CHECKING:
    from PIL import Image

TIME_EPSILON = 1e-6  # seconds: a frame "at t" is the first frame whose time is >= t - this


def is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def missing_extra() -> str | None:
    """The reason a video is skipped when PyAV is not installed; None when it is."""
    try:
        import av  # noqa: F401
    except ImportError:
        return EXTRA_MISSING
    return None


def frame_at(path: str, time: float) -> Image.Image:
    """The RGB frame of the video at `path` shown at `time` seconds: the one `sample_frames` kept at that time.
    Raises ImageDecodeError."""
    reason = missing_extra()
    if reason:
        raise ImageDecodeError(path, reason)
    with video_errors(path), open_video(path, hashed=False) as (container, _):
        stream = video_stream(container, path)
        if time > 0 and stream.time_base:
            container.seek(int(time / float(stream.time_base)), stream=stream, backward=True, any_frame=False)
        previous, count = None, 0
        for frame in container.decode(stream):
            count += 1
            if frame_time(frame, stream, count) >= time - TIME_EPSILON:
                return upright(frame)
            previous = frame
        if previous is not None:
            return upright(previous)
    raise ImageDecodeError(path, f"no frame at {time:g} s")


def upright(frame) -> Image.Image:
    """A decoded frame as the RGB image a player shows: turned by the container's display matrix (a phone
    stores a portrait video sideways and says so there). PyAV's `rotation` is the counterclockwise angle, as
    PIL's rotate and transpose take it; quarter turns are exact transposes."""
    from PIL import Image

    image = frame.to_image()
    angle = round(getattr(frame, "rotation", 0) or 0) % 360
    if angle in (90, 180, 270):
        return image.transpose(getattr(Image.Transpose, f"ROTATE_{angle}"))
    return image.rotate(angle, expand=True) if angle else image


class open_video:
    """av.open of a local path (streamed: a video may be larger than memory) or a URL's bytes, with a function
    returning the file's sha256 (local files are hashed in a pass of their own)."""

    def __init__(self, path: str, hashed: bool = True):
        self.path, self.hashed = path, hashed

    def __enter__(self):
        import av

        if is_url(self.path):
            data = read_file_bytes(self.path)
            self.container = av.open(io.BytesIO(data))
            return self.container, lambda: hashlib.sha256(data).hexdigest()
        self.container = av.open(self.path)
        return self.container, (lambda: file_sha256(self.path)) if self.hashed else (lambda: "")

    def __exit__(self, *exc_info: object) -> None:
        self.container.close()


class video_errors:
    """Whatever PyAV raises, as an ImageDecodeError naming the file with a short reason."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, _traceback) -> bool:
        if err is None or isinstance(err, ImageDecodeError):
            return False
        if isinstance(err, FileNotFoundError):
            raise ImageDecodeError(self.path, "file not found (moved or deleted?)") from None
        if isinstance(err, PermissionError):
            raise ImageDecodeError(self.path, "permission denied") from None
        import av

        if isinstance(err, (av.error.FFmpegError, OSError, ValueError, EOFError)):
            detail = getattr(err, "strerror", None) or str(err)
            raise ImageDecodeError(self.path, f"truncated or corrupt video ({detail})") from None
        return False


def video_stream(container, path: str):
    if not container.streams.video:
        raise ImageDecodeError(path, "no video frames (the file has no video stream)")
    return container.streams.video[0]


def stream_duration(stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None


def container_duration(container) -> float | None:
    """The container's duration in seconds (the longest stream's; MKV and WebM state no stream duration)."""
    return container.duration / 1_000_000 if container.duration else None


def frame_time(frame, stream, count: int) -> float:
    """The frame's presentation time in seconds (its position at the stream's rate when it has no pts)."""
    if frame.time is not None:
        return float(frame.time)
    rate = float(stream.average_rate or 25)
    return (count - 1) / rate
