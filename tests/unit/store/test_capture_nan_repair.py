"""Indexes where an older `--executor ray` stored the string "nan" for missing EXIF are repaired by the next
writer: once, part by part, row ids and embeddings kept, and a crash mid-way loses nothing (issue 22 item 2)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from bt_search.search.filters import date_filter
from bt_search.store import ImageRow, IndexIdentity, IndexReader, IndexWriter

DIM = 8
IDENTITY = IndexIdentity("tiny", None, DIM, {"size": 8}, "f" * 16)


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def rows(start: int, count: int, **capture) -> list[ImageRow]:
    return [
        ImageRow(f"/photos/{i:03d}.jpg", 100 + i, 1_000 + i, f"{i:064x}", 64, 48, unit(i), **capture)
        for i in range(start, start + count)
    ]


@pytest.fixture
def nan_index(tmp_path):
    """Three parts as an older Ray run left them: "nan" in two, real capture info in the third; ANN built."""
    index = tmp_path / "index"
    with IndexWriter.open(index, IDENTITY) as writer:
        writer.record_settings(capture_info=True)
        writer.commit(rows(0, 4, taken_at="nan", camera_make="nan", camera_model="nan"))
        writer.commit(rows(4, 4, taken_at="2021-07-04T10:11:12", camera_make="Canon", camera_model="EOS"))
        writer.commit(rows(8, 4, taken_at="nan", camera_make="Apple", camera_model="nan"))
        writer.finish()
    return index


def captures(index) -> dict[str, tuple]:
    reader = IndexReader.open(index)
    return {
        row.path: (int(i), row.taken_at, row.camera_make, row.camera_model, tuple(row.embedding))
        for i, row in ((i, reader.row(int(i))) for i in reader.ids())
    }


def expected_after_repair(before: dict[str, tuple]) -> dict[str, tuple]:
    return {
        path: (row_id, *(None if value == "nan" else value for value in capture), embedding)
        for path, (row_id, *capture, embedding) in before.items()
    }


def test_opening_a_writer_nulls_nan_capture_values_keeping_row_ids_and_embeddings(nan_index):
    before = captures(nan_index)
    before_date = date_filter(None, date(2100, 1, 1))
    assert len(IndexReader.open(nan_index).ids_where(before_date)) == 4  # the defect: "nan" > "2100-01-01"

    with IndexWriter.open(nan_index, IDENTITY) as writer:
        assert writer.settings["capture_nan_repaired"] is True

    assert captures(nan_index) == expected_after_repair(before)
    reader = IndexReader.open(nan_index)
    assert len(reader.ids_where(before_date)) == 12
    assert len(reader.ids_where(date_filter(date(2099, 1, 1), None))) == 0
    assert reader.uses_faiss_file and reader.search(unit(5)[None], 1)[1][0, 0] == 5  # the ANN file still fits


def test_a_crash_during_the_repair_loses_nothing_and_the_next_writer_finishes_it(nan_index, monkeypatch):
    from bt_search.store import writer as writer_module

    before = captures(nan_index)
    real = writer_module.repaired_part
    calls = []

    def crash_on_second_part(*args):
        calls.append(args[-1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill between two part commits
        return real(*args)

    monkeypatch.setattr(writer_module, "repaired_part", crash_on_second_part)
    with pytest.raises(KeyboardInterrupt):
        IndexWriter.open(nan_index, IDENTITY)
    half = captures(nan_index)
    assert half[f"/photos/{0:03d}.jpg"][1] is None and half[f"/photos/{8:03d}.jpg"][1] == "nan"

    monkeypatch.setattr(writer_module, "repaired_part", real)
    IndexWriter.open(nan_index, IDENTITY).close()
    assert captures(nan_index) == expected_after_repair(before)


def test_the_repair_scans_once_per_index(nan_index, monkeypatch):
    from bt_search.store import writer as writer_module

    IndexWriter.open(nan_index, IDENTITY).close()
    monkeypatch.setattr(writer_module, "parts_to_repair", lambda snapshot: pytest.fail("scanned again"))
    IndexWriter.open(nan_index, IDENTITY).close()
