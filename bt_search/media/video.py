"""Videos (MP4, MOV, MKV, WebM) through PyAV, the optional `video` extra: frames sampled by scene change.

A video becomes one index row per kept frame, keyed by the video's path plus the frame's time in seconds
(`frame_time`). Which frames are kept (`SceneSampler`, pure):

- the first decoded frame, always;
- then a frame whose 16x16 grey thumbnail differs from the last kept frame's by at least `threshold` (mean
  absolute difference of the 0..1 grey levels; `config.VIDEO_SCENE_THRESHOLD`), and that comes at least
  `60 / frames_per_minute` seconds after the last kept frame (the cap per minute: kept frames are spaced, so a
  burst of cuts costs no more than a steady scene);
- at most `max_frames` per video: a video longer than `max_frames` spacings has its spacing stretched to
  `duration / max_frames`, so the cap is spread over the whole video instead of spent on its start.

A scene change is found within one spacing of the cut. A thumbnail is computed only for frames that may be
kept (past the spacing), so the cost is the codec's. The same frame at the same time is found again by
`frame_at` (seek to the keyframe before, decode forward), which the rerank and thumbnails use. Both turn
frames as the container's display matrix says (`video_reading.upright`), so a phone's portrait video is
embedded and shown upright.

This module imports only numpy, Pillow and (on first use) PyAV: no torch, no pyarrow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

from bt_search import config
from bt_search.errors import ImageDecodeError, UsageError
from bt_search.media.exif import Capture
from bt_search.media.video_reading import (
    TIME_EPSILON,
    container_duration,
    frame_time,
    missing_extra,
    open_video,
    stream_duration,
    upright,
    video_errors,
    video_stream,
)

THUMB_SIDE = 16  # the scene-change thumbnail: grey, THUMB_SIDE x THUMB_SIDE
_TRUNCATION_SLACK = 1.0  # seconds the last frame may end before the stream's declared duration

T = TypeVar("T")


@dataclass(frozen=True)
class VideoSampling:
    """How many frames of a video become rows; see the module docstring."""

    frames_per_minute: float = config.DEFAULT_VIDEO_FRAMES_PER_MINUTE
    max_frames: int = config.DEFAULT_VIDEO_MAX_FRAMES
    threshold: float = config.VIDEO_SCENE_THRESHOLD

    def __post_init__(self) -> None:
        if not self.frames_per_minute > 0:
            raise UsageError(f"`video_frames_per_minute` must be positive, not {self.frames_per_minute}")
        if self.max_frames < 1:
            raise UsageError(f"`video_max_frames` must be at least 1, not {self.max_frames}")
        if not 0 <= self.threshold <= 1:
            raise UsageError(f"the scene `threshold` must be within 0..1, not {self.threshold}")

    def spacing(self, duration: float | None) -> float:
        """Seconds between kept frames at least: the cap per minute, stretched to spread `max_frames` over
        `duration` (None: unknown)."""
        gap = 60.0 / self.frames_per_minute
        return max(gap, duration / self.max_frames) if duration else gap


@dataclass
class SceneSampler:
    """Decides, frame by frame in decode order, which frames to keep (pure: no decoding here)."""

    sampling: VideoSampling
    duration: float | None = None
    kept_times: list[float] = field(default_factory=list)
    _last_thumb: np.ndarray | None = None

    def due(self, time: float) -> bool:
        """Whether a frame at `time` may be kept (so its thumbnail is worth computing)."""
        if not self.kept_times:
            return True
        if len(self.kept_times) >= self.sampling.max_frames:
            return False
        return time - self.kept_times[-1] >= self.sampling.spacing(self.duration) - TIME_EPSILON

    def offer(self, time: float, thumb: np.ndarray) -> bool:
        """Keep the frame at `time` with grey thumbnail `thumb` (uint8)? Records it when kept."""
        if not self.due(time):
            return False
        thumb = np.asarray(thumb, dtype=np.float32)
        if self._last_thumb is not None:
            if float(np.mean(np.abs(thumb - self._last_thumb))) / 255.0 < self.sampling.threshold:
                return False
        self.kept_times.append(time)
        self._last_thumb = thumb
        return True


@dataclass(frozen=True)
class VideoFrames(Generic[T]):
    """The kept frames of one video, each converted by the caller, with the video's facts."""

    times: list[float]
    frames: list[T]
    width: int
    height: int
    sha256: str
    capture: Capture = Capture()


def sample_frames(
    path: str, sampling: VideoSampling, convert: Callable[[Image.Image], T] = lambda img: img
) -> VideoFrames[T]:
    """The kept frames of the video at `path` (a local path or a URL), each RGB image passed through `convert`
    as soon as it is decoded (only the converted frames are held). Raises ImageDecodeError with the reason: the
    extra missing, unreadable, truncated or corrupt, no video stream, no frames."""
    reason = missing_extra()
    if reason:
        raise ImageDecodeError(path, reason)
    times: list[float] = []
    frames: list[T] = []
    with video_errors(path), open_video(path) as (container, digest):
        stream = video_stream(container, path)
        duration = stream_duration(stream)  # the video stream's own: what a truncated file falls short of
        sampler = SceneSampler(sampling, duration or container_duration(container))
        last_time, count = None, 0
        try:
            for frame in container.decode(stream):
                count += 1
                time = frame_time(frame, stream, count)
                last_time = time
                if not sampler.due(time):
                    continue
                thumb = frame.reformat(width=THUMB_SIDE, height=THUMB_SIDE, format="gray").to_ndarray()
                if sampler.offer(time, thumb):
                    times.append(time)
                    frames.append(convert(upright(frame)))
        except EOFError:
            if count:
                raise
        if count == 0:
            raise ImageDecodeError(path, "no video frames (the video stream is empty)")
        if duration is not None and last_time is not None and last_time + _TRUNCATION_SLACK < duration * 0.95:
            raise ImageDecodeError(
                path, f"truncated video (frames end at {last_time:.1f} s of the {duration:.1f} s it declares)"
            )
        width, height = stream.codec_context.width, stream.codec_context.height
        capture = video_capture(container.metadata)
    return VideoFrames(times, frames, int(width), int(height), digest(), capture)


def read_video_capture(path: str) -> Capture:
    """The capture info of the video at `path` (container metadata only, no frame decoded); an empty Capture
    when there is none, it cannot be read, or the extra is missing."""
    if missing_extra():
        return Capture()
    try:
        with open_video(path, hashed=False) as (container, _):
            return video_capture(container.metadata)
    except Exception:  # noqa: BLE001 - capture info is optional, as for EXIF
        return Capture()


def video_capture(metadata: dict[str, Any]) -> Capture:
    """The capture info a container states: `creation_time` (UTC) as ISO 8601 with +00:00, and the QuickTime
    make and model keys phones write."""
    taken_at = None
    stamp = str(metadata.get("creation_time") or "").strip()
    if stamp:
        try:
            parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.year > 1970:
            parsed = parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
            taken_at = parsed.replace(microsecond=0).isoformat()
    make = metadata.get("com.apple.quicktime.make") or metadata.get("make")
    model = metadata.get("com.apple.quicktime.model") or metadata.get("model")
    return Capture(taken_at, str(make).strip() or None if make else None, str(model).strip() or None if model else None)
