"""`bt-search index` and `query` with a video in the folder: `t` in every format, the contact sheet's frame and
its `#t=` link, `--frames all`, and the index options that cap the frames."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from tests.support.cli import cli, cli_index
from tests.support.images import noise_image
from tests.support.videos import scene, write_video


@pytest.fixture(scope="module")
def video_index(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    (root / "lib").mkdir()
    clip = write_video(root / "lib" / "clip.mkv", scenes=(0, 1, 2), seconds_each=4)
    noise_image(3, 64, 64).save(root / "lib" / "photo.png")
    cli_index([root / "lib"], root / "index", tiny_checkpoint, "--quiet", "--video-frames-per-minute", "30")
    scene(1).save(root / "query.png")
    return root, clip


def query(root, *args):
    result = cli("query", "--image", root / "query.png", "--index", root / "index", "--no-server", *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_t_in_every_format_and_one_row_per_video_by_default(video_index):
    root, clip = video_index
    hits = [json.loads(line) for line in query(root, "-f", "jsonl").splitlines()]
    assert [(hit["path"], hit["t"]) for hit in hits] == [(str(clip), 4.0), (str(root / "lib" / "photo.png"), None)]
    rows = list(csv.DictReader(io.StringIO(query(root, "-f", "csv"))))
    assert list(rows[0])[-2:] == ["t", "duplicates"] and [row["t"] for row in rows] == ["4.0", ""]
    assert query(root, "-f", "paths").splitlines() == [str(clip), str(root / "lib" / "photo.png")]
    table = query(root, "-f", "table")
    assert " t " in table.splitlines()[1] + " " and "4s" in table
    every = [json.loads(line) for line in query(root, "-f", "jsonl", "--frames", "all").splitlines()]
    assert sorted(hit["t"] for hit in every if hit["path"] == str(clip)) == [0.0, 4.0, 8.0]


def test_the_contact_sheet_shows_the_frame_and_links_the_time(video_index):
    root, clip = video_index
    query(root, "-f", "jsonl", "--html", root / "sheet.html")
    page = (root / "sheet.html").read_text()
    assert f'href="{clip.as_uri()}#t=4"' in page and '<dd class="t">4s</dd>' in page
    assert "unreadable" not in page and page.count("data:image/jpeg") == 2


def test_frame_caps_are_index_options(tiny_checkpoint, tmp_path):
    from bt_search.store import IndexReader

    (tmp_path / "lib").mkdir()
    write_video(tmp_path / "lib" / "clip.mkv", scenes=(0, 1, 2, 3), seconds_each=2)  # 8 s: 4 scenes 2 s apart
    cli_index([tmp_path / "lib"], tmp_path / "index", tiny_checkpoint, "--quiet", "--video-frames-per-minute", "60")
    reader = IndexReader.open(tmp_path / "index")
    assert reader.frame_times_for(reader.ids()) == [0.0, 2.0, 4.0, 6.0]
    args = ("--video-frames-per-minute", "60", "--video-max-frames", "2")
    cli_index([tmp_path / "lib"], tmp_path / "capped", tiny_checkpoint, "--quiet", *args)
    reader = IndexReader.open(tmp_path / "capped")
    assert reader.frame_times_for(reader.ids()) == [0.0, 4.0]  # 2 frames spread over the 8 s
    bad = cli("index", tmp_path / "lib", "--index", tmp_path / "bad", "--video-frames-per-minute", "0")
    assert bad.exit_code != 0 and "--video-frames-per-minute" in bad.output + bad.stderr


def test_the_server_answers_with_t_and_its_thumbnails_and_page_show_each_frame(video_index, tiny_checkpoint):
    from PIL import Image
    from starlette.testclient import TestClient

    from bt_search.serve.app import build_app
    from bt_search.serve.runner import allowed_hosts
    from bt_search.serve.service import Service, thumb_key

    root, clip = video_index
    service = Service.load(
        root / "index", str(tiny_checkpoint), device="cpu", precision="fp32", state_cache_mb=8, batch_size=4
    )
    answer = service.search(["a red circle"], {"top_k": 5, "frames": "all", "rerank": False})
    frames = sorted(hit.t for hit in answer.results[0] if hit.path == str(clip))
    assert frames == [0.0, 4.0, 8.0]
    app = build_app(service, allowed_hosts=allowed_hosts("127.0.0.1", 8765), token=None, max_queue=4)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        for index, t in enumerate(frames):  # scene `index` runs from 4 * index seconds
            response = client.get(f"/thumb/{thumb_key(str(clip), t)}")
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
            shown = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), np.int16)
            assert np.abs(shown - np.asarray(scene(index), np.int16)).mean() < 12
        page = client.get("/", params={"q": "a red circle"}).text
    shown = [t for t in frames if f"/thumb/{thumb_key(str(clip), t)}" in page]
    assert len(shown) == 1 and '<dd class="t">' in page  # the video's best frame, once
