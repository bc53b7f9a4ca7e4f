"""Indexing: hostile folders, formats, incremental re-runs, reference equality of stored embeddings."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from bt_search.engine.loading import load_engine
from bt_search.errors import ModelMismatchError
from bt_search.indexing.run import index_paths, plan
from bt_search.media.decoding import decode_record
from bt_search.media.scan import FileRecord
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.checkpoints import SPECS
from tests.support.hostile import write_hostile_files, write_real_world_files
from tests.support.images import noise_image
from tests.support.reference import reference_embeddings


def run_index(engine, roots, index_dir, **kwargs):
    kwargs.setdefault("workers", 0)
    kwargs.setdefault("batch_size", 4)
    with IndexWriter.open(index_dir, IndexIdentity.of(engine)) as writer:
        return index_paths([str(r) for r in roots], writer, engine, **kwargs)


def write_photos(folder, count, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"photo {i}.png"
        noise_image(i, 60 + i, 50).save(path)
        paths.append(path)
    return paths


def test_hostile_folder_indexes_the_good_and_records_the_bad(engine, tmp_path):
    photos = tmp_path / "photos"
    good = write_real_world_files(photos / "real")
    bad = write_hostile_files(photos / "bad")
    (photos / "dangling.jpg").symlink_to(photos / "nowhere.jpg")
    (photos / "loop").symlink_to(photos)
    report = run_index(engine, [photos], tmp_path / "index")

    reader = IndexReader.open(tmp_path / "index")
    assert sorted(reader.paths) == sorted(str(p) for p in good.values())
    failed = {row.path: row.reason for row in reader.failed()}
    for path in list(bad.values()) + [photos / "dangling.jpg"]:
        assert str(path) in failed and failed[str(path)]
    assert "bomb" in failed[str(bad["bomb"])] and "dangling" in failed[str(photos / "dangling.jpg")]
    assert report.indexed == len(good) and len(report.skipped) == len(bad) + 1
    norms = np.linalg.norm(reader.embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_failed_files_are_not_retried_until_they_change(engine, tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, 1)
    broken = folder / "broken.png"
    broken.write_text("not a picture")
    first = run_index(engine, [folder], tmp_path / "index")
    second = run_index(engine, [folder], tmp_path / "index")
    assert (len(first.skipped), first.failed_before) == (1, 0)
    assert (len(second.skipped), second.failed_before) == (0, 1)
    noise_image(5, 30, 30).save(broken, "PNG")  # fixed: now an image
    third = run_index(engine, [folder], tmp_path / "index")
    assert third.indexed == 1 and str(broken) in IndexReader.open(tmp_path / "index").paths
    assert str(broken) not in {row.path for row in IndexReader.open(tmp_path / "index").failed()}


def test_unreadable_file_is_skipped_with_its_reason(monkeypatch, tmp_path):
    path = tmp_path / "locked.png"
    noise_image(0, 20, 20).save(path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("bt_search.media.file_reading.open", refuse, raising=False)  # the one reader
    record = FileRecord(str(path), path.stat().st_size, path.stat().st_mtime_ns)
    assert decode_record(record, engine_prep(), draft=True) == (str(path), "cannot read file (Permission denied)")


def engine_prep():
    from bt_search.media.images import Preprocessing

    return Preprocessing(size=64, crop=64)


def test_lossless_embeddings_equal_the_reference(engine, tiny_checkpoint, tmp_path):
    paths = write_photos(tmp_path / "photos", 5)
    run_index(engine, [tmp_path / "photos"], tmp_path / "index", workers=2, batch_size=3)
    reader = IndexReader.open(tmp_path / "index")
    images = [Image.open(p).convert("RGB") for p in paths]
    expected, _ = reference_embeddings(tiny_checkpoint, images, ["a photo"])
    stored = {path: row for row, path in enumerate(reader.paths)}
    ours = reader.embeddings[[stored[str(p)] for p in paths]]
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_incremental_rerun_touch_modify_delete_add(engine, tmp_path):
    photos = tmp_path / "photos"
    paths = write_photos(photos, 6)
    index_dir = tmp_path / "index"
    first = run_index(engine, [photos], index_dir)
    assert (first.indexed, first.unchanged) == (6, 0)
    before = _embeddings_by_path(index_dir)

    os.utime(paths[0], ns=(1, 1))  # touched: same bytes, new mtime -> hash says unchanged, metadata refreshed
    noise_image(100, 70, 70).save(paths[1])  # modified
    paths[2].unlink()  # deleted
    added = write_photos(photos, 1, start=50)[0]
    second = run_index(engine, [photos], index_dir)
    after = _embeddings_by_path(index_dir)
    assert (second.indexed, second.unchanged, second.removed) == (2, 4, 0)
    assert str(paths[2]) in after, "without --prune a vanished file stays indexed"
    assert not np.allclose(after[str(paths[1])], before[str(paths[1])])
    np.testing.assert_array_equal(after[str(paths[0])], before[str(paths[0])])
    assert str(added) in after

    with IndexWriter.open(index_dir, IndexIdentity.of(engine)) as writer:
        assert writer.known_files()[str(paths[0])][1] == 1, "touched file's new mtime is stored"

    third = run_index(engine, [photos], index_dir, prune=True)
    assert (third.indexed, third.removed) == (0, 1)
    assert str(paths[2]) not in _embeddings_by_path(index_dir)
    assert len(IndexReader.open(index_dir)) == 6


def test_prune_only_touches_the_scanned_roots(engine, tmp_path):
    write_photos(tmp_path / "a", 2)
    b_paths = write_photos(tmp_path / "b", 2, start=10)
    index_dir = tmp_path / "index"
    run_index(engine, [tmp_path / "a", tmp_path / "b"], index_dir)
    b_paths[0].unlink()
    report = run_index(engine, [tmp_path / "a"], index_dir, prune=True)
    assert report.removed == 0 and str(b_paths[0]) in IndexReader.open(index_dir).paths


def test_adding_with_another_model_is_refused(engine, checkpoints, tmp_path):
    write_photos(tmp_path / "photos", 2)
    run_index(engine, [tmp_path / "photos"], tmp_path / "index")
    other = load_engine(str(checkpoints[SPECS[1].name]), device="cpu")
    with pytest.raises(ModelMismatchError, match=SPECS[1].name):
        run_index(other, [tmp_path / "photos"], tmp_path / "index")
    assert len(IndexReader.open(tmp_path / "index")) == 2


def test_plan_uses_size_mtime_then_hash(tmp_path):
    path = tmp_path / "a.png"
    noise_image(0, 10, 10).save(path)
    stat = path.stat()
    record = FileRecord(str(path), stat.st_size, stat.st_mtime_ns)
    from bt_search.indexing.run import file_sha256

    sha = file_sha256(str(path))
    same = (stat.st_size, stat.st_mtime_ns)
    cases = [
        ({}, {}, (1, 0, 0, 0)),  # new
        ({str(path): (*same, "whatever")}, {}, (0, 1, 0, 0)),  # size+mtime match: not even read
        ({str(path): (stat.st_size, 0, sha)}, {}, (0, 1, 1, 0)),  # mtime differs, same content: touched
        ({str(path): (stat.st_size, 0, "0" * 64)}, {}, (1, 0, 0, 0)),  # mtime differs, other content
        ({}, {str(path): same}, (0, 0, 0, 1)),  # failed before, unchanged: not retried
        ({}, {str(path): (stat.st_size, 0)}, (1, 0, 0, 0)),  # failed before, modified since: retried
    ]
    for known, failures, expected in cases:
        work = plan([record], known, failures)
        assert (len(work.to_embed), work.unchanged, len(work.touched), work.failed_before) == expected, (
            known,
            failures,
        )


def _embeddings_by_path(index_dir):
    reader = IndexReader.open(index_dir)
    return {path: reader.embeddings[i].copy() for i, path in enumerate(reader.paths)}


def test_decode_workers_default_to_inline_on_cpu_and_processes_on_gpu(monkeypatch):
    from bt_search import config

    monkeypatch.delenv(config.ENV_WORKERS, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert config.default_workers("cpu") == 0
    assert config.default_workers("cuda") == 15
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert config.default_workers("cuda") == 1
    assert config.parent_torch_threads("cuda", 15) == 1
    assert config.parent_torch_threads("cuda", 0) is None and config.parent_torch_threads("cpu", 3) is None
    monkeypatch.setenv(config.ENV_WORKERS, "3")
    assert config.default_workers("cpu") == 3
