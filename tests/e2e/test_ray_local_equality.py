"""`--executor ray` and the local executor write the same rows, every column (issue 22 items 2 and 6).

One small folder, one run of each on a real local Ray. The Ray run embeds in batches of 4 aligned with its
blocks, so whole batches lack EXIF: Ray Data turned such all-None capture columns into NaN, stored as "nan".
"""

from __future__ import annotations

import os
from datetime import date

import numpy as np
import pytest
from PIL import Image

from bt_search.distributed import index_with_ray
from bt_search.indexing.run import index_paths
from bt_search.search.filters import date_filter
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from bt_search.store.files import META_COLUMNS
from tests.support.images import noise_image
from tests.support.videos import write_video

BATCH = 4


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """4 photos with EXIF (one with a camera but no date), 8 without, a broken file, a name that is not UTF-8, a
    video of 3 scenes (3 frame rows, decoded in Ray's decode tasks by the local sampler)."""
    folder = tmp_path_factory.mktemp("mixed")
    for i in range(4):
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "Canon", f"EOS {i}"
        if i != 3:
            exif.get_ifd(0x8769)[0x9003] = f"2021:07:0{i + 1} 10:11:12"
        noise_image(i, 96, 64).save(folder / f"e{i}.jpg", exif=exif, quality=95)
    for i in range(8):
        noise_image(10 + i, 64 + i, 64).save(folder / f"n{i}.png")
    data = (folder / "e0.jpg").read_bytes()
    (folder / "t_broken.jpg").write_bytes(data[: len(data) // 3])
    noise_image(30, 70, 50).save(os.path.join(os.fsencode(folder), b"z\xff.png"), "PNG")
    write_video(folder / "v.mkv", scenes=(0, 1, 2), seconds_each=5, creation_time="2022-05-06T07:08:09Z")
    return folder


def all_columns(directory) -> tuple[dict[str, dict], dict[str, tuple]]:
    """Live rows by (path, frame time) (every stored column; the embedding as an array) and failures by path."""
    reader = IndexReader.open(directory)
    rows = {}
    for row_id in reader.ids():
        row = reader.row(int(row_id))
        rows[row.path, row.frame_time] = {name: getattr(row, name) for name in [*META_COLUMNS, "embedding"]}
    failed = {f.path: (f.reason, f.size, f.mtime_ns) for f in reader.failed()}
    return rows, failed


def test_ray_and_local_store_equal_rows_in_every_column(ray_cluster, engine, mixed_folder, tmp_path):
    with IndexWriter.open(tmp_path / "local", IndexIdentity.of(engine)) as writer:
        index_paths([str(mixed_folder)], writer, engine, workers=0, batch_size=BATCH)
    with IndexWriter.open(tmp_path / "ray", IndexIdentity.of(engine)) as writer:
        index_with_ray([str(mixed_folder)], writer, engine, batch_size=BATCH)

    local_rows, local_failed = all_columns(tmp_path / "local")
    ray_rows, ray_failed = all_columns(tmp_path / "ray")
    assert len(local_rows) == 16 and sorted(ray_rows, key=str) == sorted(local_rows, key=str)
    video = str(mixed_folder / "v.mkv")
    assert sorted(t for path, t in local_rows if path == video) == [0.0, 5.0, 10.0]
    assert local_rows[video, 5.0]["taken_at"] == "2022-05-06T07:08:09+00:00"
    for path, local in local_rows.items():
        ray_row = ray_rows[path]
        np.testing.assert_allclose(ray_row.pop("embedding"), local.pop("embedding"), atol=1e-5, rtol=0)
        assert ray_row == local, path
    assert ray_failed == local_failed and len(local_failed) == 1
    assert "truncated" in local_failed[str(mixed_folder / "t_broken.jpg")][0]

    taken = {path: row["taken_at"] for (path, _), row in local_rows.items()}
    assert taken[str(mixed_folder / "e0.jpg")] == "2021-07-01T10:11:12" and taken[str(mixed_folder / "n0.png")] is None
    before = date_filter(None, date(2100, 1, 1))
    assert len(IndexReader.open(tmp_path / "ray").ids_where(before)) == 16  # "nan" sorted after every day
