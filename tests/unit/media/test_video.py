"""Videos: the scene sampler's rules, decoding real (tiny) encoded videos, the frame at a time, and failures."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from bt_search.errors import ImageDecodeError, UsageError
from bt_search.media.decoding import Decoded, decode_record, load_file_image
from bt_search.media.images import Preprocessing
from bt_search.media.scan import FileRecord, has_image_extension
from bt_search.media.video import SceneSampler, VideoSampling, sample_frames, video_capture
from bt_search.media.video_reading import frame_at
from tests.support.videos import scene, truncate, turn_mp4, write_empty_video, write_video

PREP = Preprocessing(size=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
FLAT = np.zeros((16, 16), np.uint8)


def record(path) -> FileRecord:
    stat = path.stat()
    return FileRecord(str(path), stat.st_size, stat.st_mtime_ns)


def test_the_sampler_keeps_the_first_frame_then_scene_changes_spaced_by_the_cap_per_minute():
    sampler = SceneSampler(VideoSampling(frames_per_minute=30, threshold=0.1))  # one frame per 2 s at most
    assert sampler.offer(0.0, FLAT)  # the first frame, always
    assert not sampler.offer(0.5, FLAT + 200)  # a cut, but within 2 s of the last kept frame
    assert not sampler.due(1.9) and sampler.due(2.0)
    assert not sampler.offer(2.5, FLAT + 20)  # 20/255 < 0.1: the same scene
    assert sampler.offer(3.0, FLAT + 200)  # the cut of 0.5 s, kept within one spacing of it
    assert sampler.kept_times == [0.0, 3.0]


def test_the_cap_per_video_is_spread_over_a_long_video_and_never_exceeded():
    sampling = VideoSampling(frames_per_minute=60, max_frames=4)
    assert sampling.spacing(None) == 1.0 and sampling.spacing(2.0) == 1.0 and sampling.spacing(600.0) == 150.0
    sampler = SceneSampler(sampling)  # duration unknown: stops at max_frames
    kept = [t for t in range(20) if sampler.offer(float(t), FLAT + (t % 2) * 255)]
    assert kept == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", [dict(frames_per_minute=0), dict(max_frames=0), dict(threshold=1.5)])
def test_bad_sampling_settings_name_the_parameter(bad):
    with pytest.raises(UsageError, match="`"):
        VideoSampling(**bad)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm", ".mov"])
def test_each_container_gives_one_frame_per_scene_at_its_cut(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", scenes=(0, 1, 2, 3), seconds_each=2, fps=4)
    assert has_image_extension(path.name)
    sampled = sample_frames(str(path), VideoSampling(frames_per_minute=120))  # spacing 0.5 s < one scene
    assert sampled.times == [0.0, 2.0, 4.0, 6.0] and (sampled.width, sampled.height) == (64, 64)
    for index, image in enumerate(sampled.frames):  # each kept frame shows its scene (lossy codec: near)
        assert np.abs(np.asarray(image, np.int16) - np.asarray(scene(index), np.int16)).mean() < 8


def test_a_cut_between_samples_is_found_within_one_spacing(tmp_path):
    path = write_video(tmp_path / "clip.mkv", scenes=(0, 1), seconds_each=2.5, fps=4)
    times = sample_frames(str(path), VideoSampling(frames_per_minute=30)).times  # spacing 2 s, cut at 2.5 s
    assert times == [0.0, 2.5]


def test_the_frame_at_a_kept_time_is_the_kept_frame_and_decode_record_stacks_the_crops(tmp_path):
    path = write_video(tmp_path / "clip.mp4", scenes=(0, 1, 2), seconds_each=3, fps=4)
    sampled = sample_frames(str(path), VideoSampling(frames_per_minute=60))
    assert sampled.times == [0.0, 3.0, 6.0]
    for t, image in zip(sampled.times, sampled.frames):
        assert np.array_equal(np.asarray(frame_at(str(path), t)), np.asarray(image))
        assert np.array_equal(np.asarray(load_file_image(str(path), frame_time=t)), np.asarray(image))
    decoded = decode_record(record(path), PREP, draft=True, video=VideoSampling(frames_per_minute=60))
    assert isinstance(decoded, Decoded) and decoded.frame_times == (0.0, 3.0, 6.0)
    assert decoded.pixels.shape == (3, 32, 32, 3) and [t for _, t in decoded.frames()] == [0.0, 3.0, 6.0]
    assert decoded.sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


def test_truncated_empty_and_missing_extra_are_failures_with_their_reason(tmp_path, monkeypatch):
    broken = truncate(write_video(tmp_path / "broken.mp4"))
    empty = write_empty_video(tmp_path / "empty.mp4")
    assert decode_record(record(broken), PREP, draft=True)[1].startswith("truncated or corrupt video")
    assert decode_record(record(empty), PREP, draft=True)[1].startswith("no video frames")
    fine = write_video(tmp_path / "fine.mkv")
    monkeypatch.setitem(sys.modules, "av", None)  # as without the extra: `import av` raises ImportError
    assert "`video` extra" in decode_record(record(fine), PREP, draft=True)[1]
    with pytest.raises(ImageDecodeError, match="`video` extra"):
        frame_at(str(fine), 0.0)


def test_capture_date_from_the_container_and_none_for_nonsense():
    assert video_capture({"creation_time": "2021-07-04T10:11:12.000000Z"}).taken_at == "2021-07-04T10:11:12+00:00"
    assert video_capture({"creation_time": "1970-01-01T00:00:00Z"}).taken_at is None  # cameras with no clock
    assert video_capture({"creation_time": "yesterday"}).taken_at is None
    phone = video_capture({"com.apple.quicktime.make": "Apple ", "com.apple.quicktime.model": "iPhone 12"})
    assert (phone.camera_make, phone.camera_model) == ("Apple", "iPhone 12")


@pytest.mark.parametrize(
    ("matrix", "turn"),
    [
        ((0, 1, -1, 0), Image.Transpose.ROTATE_270),
        ((-1, 0, 0, -1), Image.Transpose.ROTATE_180),
        ((0, -1, 1, 0), Image.Transpose.ROTATE_90),
    ],
    ids=["quarter-clockwise", "half", "quarter-counterclockwise"],
)
def test_a_turned_video_is_sampled_and_shown_upright(tmp_path, matrix, turn):
    """A phone's portrait video: the frames the index embeds and the frame the rerank and thumbnails read are
    the picture as a player shows it, not as the file stores it."""
    turned = turn_mp4(write_video(tmp_path / "portrait.mp4", scenes=(2,), seconds_each=1), matrix)
    stored = np.asarray(scene(2), dtype=float)
    shown = np.asarray(scene(2).transpose(turn), dtype=float)
    frames = sample_frames(str(turned), VideoSampling())
    for frame in (frames.frames[0], frame_at(str(turned), frames.times[0])):
        pixels = np.asarray(frame, dtype=float)
        assert np.abs(pixels - shown).mean() < 8 < np.abs(pixels - stored).mean()  # lossy codec: near, not equal
