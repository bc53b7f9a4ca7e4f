"""Capture time and camera: read from EXIF at index time, filtered before the shortlist (mtime fallback),
shown in output, sortable; an index built before these columns gets them without re-embedding."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import date

import numpy as np
import pytest
from typer.testing import CliRunner

from bt_search.cli.app import app
from bt_search.errors import UsageError
from bt_search.indexing.run import index_paths
from bt_search.media.exif import Capture, iso_taken_at, read_capture
from bt_search.search.filters import date_filter
from bt_search.search.searcher import Searcher
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.exif_photos import IN_2021, write_photos


def build(engine, folder, index):
    with IndexWriter.open(index, IndexIdentity.of(engine)) as writer:
        index_paths([str(folder)], writer, engine, workers=0, batch_size=4)
    return IndexReader.open(index)


@pytest.fixture(scope="module")
def indexed(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("capture")
    folder = write_photos(root / "photos")
    return folder, build(engine, folder, root / "index"), root / "index"


@pytest.mark.parametrize(
    "original, offset, expected",
    [
        ("2021:07:04 10:11:12", "+02:00", "2021-07-04T10:11:12+02:00"),
        ("2021:07:04 10:11:12", None, "2021-07-04T10:11:12"),
        (b"2021:07:04 10:11:12\x00", b"-05:30", "2021-07-04T10:11:12-05:30"),
        ("2021:07:04 10:11:12", "garbage", "2021-07-04T10:11:12"),
        ("0000:00:00 00:00:00", None, None),
        ("    :  :     :  :  ", None, None),
        (None, "+01:00", None),
    ],
)
def test_exif_dates_to_iso(original, offset, expected):
    assert iso_taken_at(original, offset) == expected


def test_index_stores_capture_columns(indexed):
    folder, reader, _ = indexed
    rows = {os.path.basename(reader.paths[i]): reader.row(i) for i in range(len(reader))}
    assert rows["beach-2020.jpg"].taken_at == "2020-12-31T23:59:59+01:00"
    assert rows["beach-2021b.jpg"].taken_at == "2021-06-15T12:00:00-07:00"
    assert rows["beach-2021a.jpg"].taken_at == "2021-01-01T00:00:00"
    assert (rows["beach-2021b.jpg"].camera_make, rows["beach-2021b.jpg"].camera_model) == ("Apple", "iPhone 2")
    assert rows["mtime-2021.png"].taken_at is None and rows["mtime-2021.png"].camera_make is None
    assert read_capture(folder / "beach-2021b.jpg") == Capture("2021-06-15T12:00:00-07:00", "Apple", "iPhone 2")


@pytest.mark.parametrize(
    "after, before, expected",
    [
        (date(2021, 1, 1), date(2021, 12, 31), IN_2021),
        (date(2021, 12, 31), None, {"beach-2021c.jpg", "beach-2022.jpg", "mtime-2023.png"}),
        (None, date(2020, 12, 31), {"beach-2020.jpg"}),
        (date(2021, 3, 3), date(2021, 3, 3), {"mtime-2021.png"}),  # mtime fallback, a whole local day
        (date(2023, 5, 6), None, set()),
    ],
)
def test_date_filter_inclusive_whole_days_with_mtime_fallback(indexed, after, before, expected):
    _, reader, _ = indexed
    ids = reader.ids_where(date_filter(after, before))
    assert {os.path.basename(p) for p in reader.paths_for(ids)} == expected


def test_bad_dates_are_usage_errors():
    with pytest.raises(UsageError, match="later than"):
        date_filter(date(2022, 1, 1), date(2021, 1, 1))


def test_filter_applies_before_the_shortlist_so_k_results_come_back(indexed, engine):
    _, reader, _ = indexed
    searcher = Searcher(reader, engine)
    where = date_filter(date(2021, 1, 1), date(2021, 12, 31))
    (hits,) = searcher.search(["a beach"], top_k=4, shortlist=1, rerank=False, where=where)
    assert {os.path.basename(h.path) for h in hits} == IN_2021  # a post-filter of 1 candidate would give <= 1


def test_cli_query_dates_output_and_sort(indexed, tiny_checkpoint):
    _, _, index = indexed
    args = ["query", "a beach", "--index", str(index), "--no-rerank", "--no-fold", "-k", "10", "-f", "jsonl"]
    result = CliRunner().invoke(app, [*args, "--after", "2021-01-01", "--before", "2021-12-31", "--sort", "date"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    names = [os.path.basename(r["path"]) for r in records]
    assert names == ["beach-2021a.jpg", "mtime-2021.png", "beach-2021b.jpg", "beach-2021c.jpg"]  # oldest first
    assert [r["taken_at"] for r in records] == [
        "2021-01-01T00:00:00",
        None,
        "2021-06-15T12:00:00-07:00",
        "2021-12-31T23:59:59",
    ]
    assert sorted(r["rank"] for r in records) == [1, 2, 3, 4]
    csv_out = CliRunner().invoke(app, [*args[:-1], "csv", "--before", "2020-12-31"])
    assert "taken_at" in csv_out.stdout.splitlines()[0].split(",") and "2020-12-31T23:59:59+01:00" in csv_out.stdout
    bad = CliRunner().invoke(app, [*args, "--after", "2021-13-01"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


def test_old_index_gains_capture_columns_without_re_embedding(engine, tmp_path, monkeypatch):
    folder = write_photos(tmp_path / "photos")
    index = tmp_path / "index"
    before = build(engine, folder, index)
    embeddings = {p: before.embeddings[i].copy() for i, p in enumerate(before.paths)}
    _make_it_an_index_from_before_capture_columns(index)
    old = IndexReader.open(index)
    assert all(old.row(int(i)).taken_at is None for i in old.ids())

    calls = []
    real = engine.encode_images
    monkeypatch.setattr(engine, "encode_images", lambda pixels: calls.append(len(pixels)) or real(pixels))
    upgraded = build(engine, folder, index)
    assert calls == [], "no embedding may be recomputed"
    rows = {os.path.basename(upgraded.row(int(i)).path): upgraded.row(int(i)) for i in upgraded.ids()}
    assert (
        rows["beach-2021b.jpg"].taken_at == "2021-06-15T12:00:00-07:00"
        and rows["beach-2021b.jpg"].camera_make == "Apple"
    )
    for i, path in enumerate(upgraded.paths):
        np.testing.assert_array_equal(upgraded.embeddings[i], embeddings[path])
    assert upgraded.manifest["settings"]["capture_info"] is True


def _make_it_an_index_from_before_capture_columns(index):
    """As an index written before capture columns existed: rows without capture info, no capture_info setting."""
    reader = IndexReader.open(index)
    rows = [replace(reader.row(int(i)), taken_at=None, camera_make=None, camera_model=None) for i in reader.ids()]
    with IndexWriter.open(index, reader.identity) as writer:
        writer.commit(rows)
        writer.record_settings(capture_info=False)
        writer.finish()
