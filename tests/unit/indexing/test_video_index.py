"""Videos in the index: a row per kept frame under the video's path, replaced and pruned as a unit, decoded again
only when the file changed; failures with their reason; parts written before `frame_time` still open; the search
folds a video's frames into its best one and finds the right segment."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from bt_search.indexing.run import index_paths
from bt_search.media.video import VideoSampling, sample_frames
from bt_search.search.searcher import Searcher
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.images import noise_image
from tests.support.videos import scene, truncate, write_empty_video, write_video

SAMPLING = VideoSampling(frames_per_minute=30)  # at most one frame per 2 s
SECONDS_EACH = 4  # a scene lasts two spacings


def run_index(engine, roots, index_dir, **kwargs):
    kwargs.setdefault("workers", 0)
    kwargs.setdefault("batch_size", 2)  # a video's 3 frames outgrow a batch: they still go in one commit
    kwargs.setdefault("video", SAMPLING)
    with IndexWriter.open(index_dir, IndexIdentity.of(engine)) as writer:
        return index_paths([str(r) for r in roots], writer, engine, **kwargs)


def frames_by_path(index_dir) -> dict[str, list]:
    reader = IndexReader.open(index_dir)
    ids = reader.ids()
    found: dict[str, list] = {}
    for path, t in zip(reader.paths_for(ids), reader.frame_times_for(ids)):
        found.setdefault(path, []).append(t)
    return {path: sorted(times, key=lambda t: -1 if t is None else t) for path, times in found.items()}


@pytest.fixture
def library(tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    clip = write_video(
        folder / "clip.mp4", scenes=(0, 1, 2), seconds_each=SECONDS_EACH, creation_time="2023-01-02T03:04:05Z"
    )
    noise_image(1, 64, 64).save(folder / "photo.png")
    truncate(write_video(folder / "broken.mp4"))
    write_empty_video(folder / "empty.mp4")
    return folder, clip


def test_a_video_is_a_row_per_scene_with_its_date_and_bad_videos_are_failed_rows(engine, library, tmp_path):
    folder, clip = library
    report = run_index(engine, [folder], tmp_path / "index")
    assert frames_by_path(tmp_path / "index") == {str(clip): [0.0, 4.0, 8.0], str(folder / "photo.png"): [None]}
    assert report.indexed == 2 and report.total_images == 4  # files indexed; rows in the index
    reader = IndexReader.open(tmp_path / "index")
    row = reader.row(int(reader.ids()[1]))
    assert (row.path, row.frame_time, row.taken_at) == (str(clip), 4.0, "2023-01-02T03:04:05+00:00")
    failed = {os.path.basename(f.path): f.reason for f in reader.failed()}
    assert failed["broken.mp4"].startswith("truncated or corrupt video")
    assert failed["empty.mp4"].startswith("no video frames")


def test_unchanged_videos_are_not_decoded_again_and_a_changed_one_is_replaced_whole(
    engine, library, tmp_path, monkeypatch
):
    folder, clip = library
    index = tmp_path / "index"
    run_index(engine, [folder], index)
    decoded = []
    real = sample_frames
    counted = lambda path, *args, **kwargs: decoded.append(path) or real(path, *args, **kwargs)  # noqa: E731
    monkeypatch.setattr("bt_search.media.decoding.sample_frames", counted)

    report = run_index(engine, [folder], index)
    assert decoded == [] and report.indexed == 0 and report.unchanged == 2

    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 10**9))  # touched: same bytes
    report = run_index(engine, [folder], index)
    assert decoded == [] and report.unchanged == 2
    rows = [IndexReader.open(index).row(int(i)) for i in IndexReader.open(index).ids()]
    assert sorted(r.frame_time for r in rows if r.path == str(clip)) == [0.0, 4.0, 8.0]
    assert {r.mtime_ns for r in rows if r.path == str(clip)} == {clip.stat().st_mtime_ns}

    write_video(clip, scenes=(3, 0), seconds_each=SECONDS_EACH)  # changed: two scenes now
    report = run_index(engine, [folder], index)
    assert decoded == [str(clip)] and report.indexed == 1
    assert frames_by_path(index)[str(clip)] == [0.0, 4.0]  # the three old frames are gone, none duplicated

    clip.unlink()
    report = run_index(engine, [folder], index, prune=True)
    assert report.removed == 1 and str(clip) not in frames_by_path(index)


def test_parts_written_before_frame_time_open_as_still_images(engine, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        noise_image(i, 64, 64).save(photos / f"p{i}.png")
    index = tmp_path / "index"
    run_index(engine, [photos], index)
    (part,) = (index / "parts").iterdir()
    old = pq.read_table(part).drop_columns(["frame_time"])  # as an earlier bt-search wrote it
    pq.write_table(old, part)
    assert "frame_time" not in pq.read_schema(part).names

    reader = IndexReader.open(index)
    assert reader.frame_times_for(reader.ids()) == [None, None, None]
    assert reader.row(0).frame_time is None
    clip = write_video(photos / "clip.mkv", scenes=(0, 1), seconds_each=SECONDS_EACH)
    run_index(engine, [photos], index)  # new parts with the column beside the old one ...
    for i in range(3, 5):
        noise_image(i, 64, 64).save(photos / f"p{i}.png")
        run_index(engine, [photos], index)  # ... until 4 share a level and compaction merges them
    manifest = IndexReader.open(index).manifest
    assert [part["level"] for part in manifest["parts"]] == [1]
    merged = pq.read_table(index / manifest["parts"][0]["file"])
    assert merged.column("frame_time").to_pylist() == [None, None, None, 0.0, 4.0, None, None]
    assert frames_by_path(index)[str(clip)] == [0.0, 4.0] and frames_by_path(index)[str(photos / "p0.png")] == [None]


def test_an_image_query_finds_the_segment_and_shows_one_frame_per_video_unless_all(engine, library, tmp_path):
    folder, clip = library
    run_index(engine, [folder], tmp_path / "index")
    query = tmp_path / "query.png"
    scene(1).save(query)
    searcher = Searcher(IndexReader.open(tmp_path / "index"), engine)
    best = searcher.similar_images(str(query), top_k=10)
    assert [(hit.path, hit.t) for hit in best][:1] == [(str(clip), 4.0)]  # scene 1 runs from 4 s to 8 s
    assert [hit.rank for hit in best] == list(range(1, len(best) + 1)) and len(best) == 2  # the video once
    every = searcher.similar_images(str(query), top_k=10, frames="all")
    assert sorted(hit.t for hit in every if hit.path == str(clip)) == [0.0, 4.0, 8.0]
    assert every[0].t == 4.0 and np.isclose(every[0].similarity, best[0].similarity)


def test_ray_batches_hand_over_a_video_once_all_its_frames_came_back(engine, library, tmp_path):
    from bt_search.distributed.pipeline import rows_and_failures
    from bt_search.distributed.stages import decode_batch

    folder, clip = library
    listing = {"path": np.array([os.fsencode(clip), os.fsencode(folder / "photo.png")], dtype=object)}
    listing["size"] = np.array([clip.stat().st_size, (folder / "photo.png").stat().st_size])
    listing["mtime_ns"] = np.array([clip.stat().st_mtime_ns, (folder / "photo.png").stat().st_mtime_ns])
    decoded = decode_batch(listing, engine.preprocessing, draft=True, video=SAMPLING)  # the local sampler's frames
    assert decoded["frame_time"][:3].tolist() == [0.0, 4.0, 8.0] and np.isnan(decoded["frame_time"][3])
    assert decoded["frames"].tolist() == [3, 3, 3, 1]
    embedded = {**decoded, "embedding": np.eye(4, engine.embedding_dim, dtype=np.float32)}
    waiting: dict = {}
    halves = [{name: column[i] for name, column in embedded.items()} for i in ([2, 3], [1, 0])]  # split, shuffled
    first, _ = rows_and_failures(halves[0], waiting)
    assert [(row.path, row.frame_time) for row in first] == [(str(folder / "photo.png"), None)]
    second, _ = rows_and_failures(halves[1], waiting)
    assert [(row.path, row.frame_time) for row in second] == [(str(clip), 0.0), (str(clip), 4.0), (str(clip), 8.0)]
    assert waiting == {}
