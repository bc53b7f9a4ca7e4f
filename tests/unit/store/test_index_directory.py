"""The index directory: round trips, crash safety, locking, identity checks and search."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from bt_search.errors import (
    IndexFormatError,
    IndexLockedError,
    IndexMissingError,
    ModelMismatchError,
    UsageError,
)
from bt_search.store import (
    FORMAT_VERSION,
    FailedRow,
    ImageRow,
    IndexIdentity,
    IndexReader,
    IndexStats,
    IndexWriter,
    choose_index_type,
)
from bt_search.store import reader as reader_module

DIM = 16
IDENTITY = IndexIdentity("tiny/bridgetower", "abc123", DIM, {"size": 288, "mean": [0.5, 0.5, 0.5]})


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def clustered_unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Random, but clustered like real embeddings (uniform points on a sphere have no neighbours)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    vectors = (centres[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_rows(names: list[str], embeddings: np.ndarray, version: int = 0) -> list[ImageRow]:
    return [
        ImageRow(f"/photos/{name}", 1000 + i + version, 10**18 + i, f"sha-{name}-{version}", 640 + i, 480 - i, e)
        for i, (name, e) in enumerate(zip(names, embeddings, strict=True))
    ]


def brute_force(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ embeddings.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def state(reader: IndexReader) -> dict[str, tuple]:
    """path -> (size, mtime_ns, sha256, width, height, embedding bytes), asserting paths are unique."""
    rows = [reader.row(i) for i in reader.ids()]
    assert len({row.path for row in rows}) == len(rows), "duplicate paths"
    return {r.path: (r.size, r.mtime_ns, r.sha256, r.width, r.height, r.embedding.tobytes()) for r in rows}


def expected_state(rows: list[ImageRow]) -> dict[str, tuple]:
    return {r.path: (r.size, r.mtime_ns, r.sha256, r.width, r.height, r.embedding.tobytes()) for r in rows}


# --- round trip ---------------------------------------------------------------------------------


def test_commit_finish_reopen_round_trip_is_exact(tmp_path):
    embeddings = unit_vectors(5, seed=1)
    rows = make_rows(["a.jpg", "b.jpg", "ü ñ.png", "new\nline.jpg", "e.webp"], embeddings)
    failure = FailedRow("/photos/broken.jpg", "cannot identify image file", 12, 34)
    with IndexWriter.open(tmp_path / "idx", IDENTITY) as writer:
        writer.commit(rows[:2], failed=[failure])
        writer.commit(rows[2:])
        stats = writer.finish()

    assert stats == IndexStats(images=5, failed=1, removed=0)
    reader = IndexReader.open(tmp_path / "idx")
    assert len(reader) == 5
    assert reader.paths == [row.path for row in rows]
    assert np.array_equal(reader.embeddings, embeddings)
    assert reader.embeddings.dtype == np.float32
    assert state(reader) == expected_state(rows)
    assert reader.failed() == [failure]
    assert reader.identity == IDENTITY
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 2
    identity = (manifest["model"], manifest["model_revision"], manifest["embedding_dim"])
    assert identity == ("tiny/bridgetower", "abc123", DIM)
    assert manifest["preprocessing"] == IDENTITY.preprocessing
    assert manifest["counts"] == {"images": 5, "failed": 1}
    assert manifest["index_type"] == "flat"
    assert {"created", "updated", "tool_version"} <= manifest.keys()


def test_files_are_readable_with_plain_pyarrow(tmp_path):
    embeddings = unit_vectors(3, seed=2)
    rows = make_rows(["x.jpg", "y.jpg", "z.jpg"], embeddings)
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(rows, failed=[FailedRow("/photos/bad.png", "truncated", 1, 2)])
        writer.finish()

    images = ds.dataset(str(tmp_path / "parts"), format="parquet").to_table()
    assert images.column_names == [
        "row_id",
        "path",
        "size",
        "mtime_ns",
        "sha256",
        "width",
        "height",
        "taken_at",
        "camera_make",
        "camera_model",
        "frame_time",
        "embedding",
    ]
    assert images.column("frame_time").to_pylist() == [None, None, None]  # still images
    assert images.column("path").to_pylist() == [row.path for row in rows]
    assert np.array_equal(np.array(images.column("embedding").to_pylist(), dtype=np.float32), embeddings)
    assert str(images.schema.field("embedding").type) == f"fixed_size_list<element: float>[{DIM}]"
    failed = ds.dataset(str(tmp_path / "failed"), format="parquet").to_table().to_pylist()
    assert failed == [{"path": "/photos/bad.png", "reason": "truncated", "size": 1, "mtime_ns": 2}]


def test_empty_index_opens_and_searches(tmp_path):
    with IndexWriter.open(tmp_path / "idx", IDENTITY) as writer:
        assert writer.finish() == IndexStats(0, 0, 0)
    reader = IndexReader.open(tmp_path / "idx")
    similarities, ids = reader.search(unit_vectors(2, seed=3), k=5)
    assert len(reader) == 0 and similarities.shape == ids.shape == (2, 0)


# --- incremental updates ------------------------------------------------------------------------


def test_reader_sees_committed_segments_before_finish(tmp_path):
    rows = make_rows(["a.jpg", "b.jpg", "c.jpg"], unit_vectors(3, seed=4))
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(rows[:2])
        first = IndexReader.open(tmp_path)
        writer.commit(rows[2:], removed=["/photos/a.jpg"])
        second = IndexReader.open(tmp_path)

    assert state(first) == expected_state(rows[:2])
    assert state(second) == expected_state(rows[1:])
    _, ids = second.search(rows[2].embedding[None], k=1)
    assert second.paths_for(ids[0]) == ["/photos/c.jpg"]


def test_upsert_replaces_the_row_of_a_changed_path(tmp_path):
    old = make_rows(["a.jpg", "b.jpg"], unit_vectors(2, seed=5))
    changed = make_rows(["a.jpg"], unit_vectors(1, seed=6), version=1)
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(old)
        writer.finish()
        writer.commit(changed)
        assert writer.known_files()["/photos/a.jpg"] == (changed[0].size, changed[0].mtime_ns, "sha-a.jpg-1")
        assert state(IndexReader.open(tmp_path)) == expected_state([old[1], changed[0]])
        writer.finish()

    assert state(IndexReader.open(tmp_path)) == expected_state([old[1], changed[0]])


def test_removed_paths_and_failures_disappear(tmp_path):
    rows = make_rows(["a.jpg", "b.jpg", "c.jpg"], unit_vectors(3, seed=7))
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(rows, failed=[FailedRow("/photos/bad.jpg", "broken", 1, 1)])
        writer.finish()
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit([], removed=["/photos/a.jpg", "/photos/bad.jpg", "/photos/never-indexed.jpg"])
        assert set(writer.known_files()) == {"/photos/b.jpg", "/photos/c.jpg"}
        assert writer.known_failures() == {}
        stats = writer.finish()

    assert stats == IndexStats(images=2, failed=0, removed=2)
    reader = IndexReader.open(tmp_path)
    assert state(reader) == expected_state(rows[1:])
    assert reader.failed() == []


def test_a_file_moves_between_failed_and_indexed(tmp_path):
    (row,) = make_rows(["flaky.jpg"], unit_vectors(1, seed=8))
    failure = FailedRow(row.path, "truncated", 5, 6)
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit([], failed=[failure])
        writer.finish()
        writer.commit([row])
        assert (writer.known_failures(), list(writer.known_files())) == ({}, [row.path])
        writer.finish()
        assert (len(IndexReader.open(tmp_path)), IndexReader.open(tmp_path).failed()) == (1, [])
        writer.commit([], failed=[failure])
        writer.finish()

    reader = IndexReader.open(tmp_path)
    assert (len(reader), reader.failed()) == (0, [failure])


def test_rows_by_sha256_offers_embeddings_for_reuse(tmp_path):
    rows = make_rows(["a.jpg", "b.jpg"], unit_vectors(2, seed=9))
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(rows)
        found = writer.rows_by_sha256(["sha-b.jpg-0", "unknown"])
    assert list(found) == ["sha-b.jpg-0"]
    assert found["sha-b.jpg-0"].path == "/photos/b.jpg"
    assert np.array_equal(found["sha-b.jpg-0"].embedding, rows[1].embedding)


def test_finish_without_changes_rewrites_nothing(tmp_path):
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(make_rows(["a.jpg"], unit_vectors(1, seed=10)))
        writer.finish()
        before = {path: os.stat(path).st_ino for path in [tmp_path / "manifest.json", *tmp_path.glob("*/*")]}
        writer.finish()
    assert before == {path: os.stat(path).st_ino for path in [tmp_path / "manifest.json", *tmp_path.glob("*/*")]}


def test_a_reader_keeps_its_snapshot_while_a_writer_finishes(tmp_path):
    old = make_rows(["a.jpg", "b.jpg"], unit_vectors(2, seed=11))
    new = make_rows(["a.jpg", "b.jpg"], unit_vectors(2, seed=12), version=1)
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(old)
        writer.finish()
        reader = IndexReader.open(tmp_path)  # embeddings not read yet
        writer.commit(new)
        writer.finish()  # compacts: deletes the part the reader was opened on

    assert state(reader) == expected_state(old)
    assert state(IndexReader.open(tmp_path)) == expected_state(new)


def test_a_part_vanishing_between_manifest_and_open_is_retried_with_the_new_manifest(tmp_path, monkeypatch):
    rows = make_rows(["a.jpg"], unit_vectors(1, seed=13))
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(rows)
    real_open_snapshot = reader_module.open_snapshot
    calls = []

    def compacted_meanwhile(directory, manifest):
        calls.append(manifest["generation"])
        if len(calls) == 1:
            raise FileNotFoundError("parts/part-00000000.parquet")
        return real_open_snapshot(directory, manifest)

    monkeypatch.setattr(reader_module, "open_snapshot", compacted_meanwhile)
    assert state(IndexReader.open(tmp_path)) == expected_state(rows)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "bad_rows, message",
    [
        (lambda e: make_rows(["a.jpg"], 2 * e[:1]), "not L2-normalised"),
        (lambda e: make_rows(["a.jpg"], e[:1, :8]), "shape"),
        (lambda e: make_rows(["a.jpg", "a.jpg"], e[:2]), "more than once"),
        (lambda e: [ImageRow("rel/a.jpg", 1, 1, "s", 1, 1, e[0])], "absolute"),
    ],
)
def test_commit_rejects_bad_rows(tmp_path, bad_rows, message):
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        with pytest.raises(ValueError, match=message):
            writer.commit(bad_rows(unit_vectors(2, seed=14)))
    assert list(tmp_path.glob("parts/*")) == []


# --- crash safety -------------------------------------------------------------------------------


def test_leftover_temporary_and_orphan_files_are_ignored_and_cleaned(tmp_path):
    rows = make_rows(["a.jpg"], unit_vectors(1, seed=17))
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(rows)
    leftover = tmp_path / "parts" / ".part-00000002.parquet.999.tmp"
    leftover.write_bytes(b"half a parquet file")  # what kill -9 during a write leaves
    orphan = tmp_path / "parts" / "part-00000002.parquet"
    shutil.copy(next((tmp_path / "parts").glob("part-*.parquet")), orphan)  # written, manifest not yet

    assert state(IndexReader.open(tmp_path)) == expected_state(rows)
    with IndexWriter.open(tmp_path, IDENTITY):
        assert not leftover.exists() and not orphan.exists()
    assert state(IndexReader.open(tmp_path)) == expected_state(rows)


CHILD_INDEXER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from bt_search.store import ImageRow, IndexIdentity, IndexWriter

    directory, vectors_file = sys.argv[1], sys.argv[2]
    identity = IndexIdentity(**{json_identity})
    vectors = np.load(vectors_file)
    rows = [ImageRow(f"/photos/{{i}}.jpg", i, i, f"sha{{i}}", 1, 1, v) for i, v in enumerate(vectors)]
    with IndexWriter.open(directory, identity) as writer:
        print("ready", flush=True)  # the index exists: a kill from now on leaves one to read
        known = writer.known_files()
        todo = [row for row in rows if row.path not in known]
        for start in range(0, len(todo), 5):
            batch = todo[start:start + 5]
            writer.commit(batch)
            print("committed", *(row.path for row in batch), flush=True)
            if start % 15 == 10:
                writer.finish("hnsw")
        writer.finish("hnsw")
    print("done", len(todo), flush=True)
    """
)


def run_child_indexer(tmp_path: Path, vectors: np.ndarray, kill_after: float | None) -> list[str]:
    np.save(tmp_path / "vectors.npy", vectors)
    script = CHILD_INDEXER.format(json_identity=repr(IDENTITY.__dict__))
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "idx"), str(tmp_path / "vectors.npy")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline() == "ready\n"
    if kill_after is None:
        child.wait(timeout=60)
    else:
        time.sleep(kill_after)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    return child.stdout.read().splitlines()


def test_kill_9_at_any_moment_loses_no_committed_work_and_leaves_no_duplicates(tmp_path):
    vectors = unit_vectors(90, seed=18)
    expected = {f"/photos/{i}.jpg": vectors[i].tobytes() for i in range(90)}
    for kill_after in (0.03, 0.08, 0.13, 0.2):  # spread over commits and finishes
        reported = run_child_indexer(tmp_path, vectors, kill_after)
        committed = {path for line in reported if line.startswith("committed") for path in line.split()[1:]}
        reader = IndexReader.open(tmp_path / "idx")
        indexed = {path: row[-1] for path, row in state(reader).items()}
        assert committed <= set(indexed), "a reported commit was lost"
        assert all(expected[path] == embedding for path, embedding in indexed.items())

    before_last_run = len(IndexReader.open(tmp_path / "idx"))
    assert run_child_indexer(tmp_path, vectors, kill_after=None)[-1] == f"done {90 - before_last_run}"
    reader = IndexReader.open(tmp_path / "idx")
    assert {path: row[-1] for path, row in state(reader).items()} == expected
    assert reader.uses_faiss_file


# --- identity, format, lock ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        IndexIdentity("other/model", "abc123", DIM, IDENTITY.preprocessing),
        IndexIdentity("tiny/bridgetower", "def456", DIM, IDENTITY.preprocessing),
        IndexIdentity("tiny/bridgetower", "abc123", 32, IDENTITY.preprocessing),
        IndexIdentity("tiny/bridgetower", "abc123", DIM, {"size": 384, "mean": [0.5, 0.5, 0.5]}),
    ],
)
def test_an_index_of_another_model_is_refused(tmp_path, other):
    IndexWriter.open(tmp_path, IDENTITY).close()
    with pytest.raises(ModelMismatchError) as caught:
        IndexWriter.open(tmp_path, other)
    message = str(caught.value)
    assert "tiny/bridgetower" in message and other.model in message and "`model`" in message and "`index`" in message
    with pytest.raises(ModelMismatchError):
        IndexReader.open(tmp_path).identity.require_compatible(other, tmp_path)


def test_equal_identities_with_differently_ordered_preprocessing_are_compatible(tmp_path):
    IndexWriter.open(tmp_path, IDENTITY).close()
    reordered = IndexIdentity("tiny/bridgetower", "abc123", DIM, {"mean": (0.5, 0.5, 0.5), "size": 288})
    IndexWriter.open(tmp_path, reordered).close()
    assert IndexReader.open(tmp_path).identity.is_compatible(reordered)


def test_unknown_format_version_is_refused_with_a_rebuild_hint(tmp_path):
    IndexWriter.open(tmp_path, IDENTITY).close()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))

    for open_index in (IndexReader.open, lambda d: IndexWriter.open(d, IDENTITY)):
        with pytest.raises(IndexFormatError, match=r"format version 99.*bt-search index PATH --index"):
            open_index(tmp_path)


def test_damaged_manifest_is_a_format_error(tmp_path):
    IndexWriter.open(tmp_path, IDENTITY).close()
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="rebuild"):
        IndexReader.open(tmp_path)


def test_damaged_data_files_are_format_errors_with_a_way_out(tmp_path):
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(make_rows(["a.jpg"], unit_vectors(1, seed=30)))
    (part,) = (tmp_path / "parts").iterdir()
    part.write_bytes(b"PAR1 garbage")
    with pytest.raises(IndexFormatError, match=rf"{part.name} is damaged.*bt-search index PATH --index"):
        IndexReader.open(tmp_path).paths_for([0])


def test_missing_index_says_how_to_build_one(tmp_path):
    with pytest.raises(IndexMissingError, match=r"no index at .*nowhere; build one with `bt-search index PATH"):
        IndexReader.open(tmp_path / "nowhere")


def test_writer_refuses_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(UsageError, match="not a bt-search index"):
        IndexWriter.open(tmp_path, IDENTITY)
    assert sorted(os.listdir(tmp_path)) == ["holiday.jpg"]


def test_second_writer_in_the_same_process_is_locked_out(tmp_path):
    with IndexWriter.open(tmp_path, IDENTITY):
        with pytest.raises(IndexLockedError, match=rf"locked by another bt-search index run \(pid {os.getpid()}\)"):
            IndexWriter.open(tmp_path, IDENTITY)
        IndexReader.open(tmp_path)  # readers take no lock
    IndexWriter.open(tmp_path, IDENTITY).close()  # released on close


def test_writer_lock_holds_across_processes(tmp_path):
    holder_script = textwrap.dedent(
        f"""
        import sys
        from bt_search.store import IndexIdentity, IndexWriter
        with IndexWriter.open(sys.argv[1], IndexIdentity(**{IDENTITY.__dict__!r})):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_script, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(IndexLockedError, match=rf"\(pid {holder.pid}\); wait for it to finish"):
            IndexWriter.open(tmp_path, IDENTITY)
    finally:
        holder.communicate("\n", timeout=30)
    IndexWriter.open(tmp_path, IDENTITY).close()


# --- search -------------------------------------------------------------------------------------


def build_index(directory: Path, embeddings: np.ndarray, index_type: str = "auto") -> IndexReader:
    with IndexWriter.open(directory, IDENTITY) as writer:
        writer.commit(make_rows([f"{i}.jpg" for i in range(len(embeddings))], embeddings))
        writer.finish(index_type)
    return IndexReader.open(directory)


def test_flat_search_equals_brute_force(tmp_path):
    embeddings, queries = unit_vectors(500, seed=19), unit_vectors(7, seed=20)
    reader = build_index(tmp_path, embeddings)

    similarities, ids = reader.search(queries, k=10)
    expected_similarities, expected_ids = brute_force(embeddings, queries, 10)

    assert reader.uses_faiss_file and reader.manifest["index_type"] == "flat"  # exact, memory-mapped
    assert np.array_equal(ids, expected_ids)
    np.testing.assert_allclose(similarities, expected_similarities, atol=1e-5)
    all_similarities, all_ids = reader.search(queries, k=10_000)  # k clipped to N
    assert all_ids.shape == (7, 500) and (all_ids >= 0).all()
    assert all(sorted(row) == list(range(500)) for row in all_ids.tolist())
    assert reader.search(queries, k=0)[1].shape == (7, 0)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf_flat", "ivf_sq8", "ivf_pq"])
def test_approximate_indexes_recall_and_complete_results(tmp_path, index_type):
    embeddings = clustered_unit_vectors(3000, seed=21)
    queries = clustered_unit_vectors(50, seed=21)[:50] + 0.01  # near the data, not on it
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    reader = build_index(tmp_path, embeddings, index_type)

    similarities, ids = reader.search(queries, k=10)
    expected_similarities, expected_ids = brute_force(embeddings, queries, 10)

    assert reader.uses_faiss_file and reader.manifest["index_type"] == index_type
    recall = np.mean([len(set(got) & set(want)) / 10 for got, want in zip(ids, expected_ids, strict=True)])
    assert recall >= 0.9
    np.testing.assert_allclose(similarities, (queries[:, None, :] * embeddings[ids]).sum(-1), atol=1e-5)
    _, many = reader.search(queries, k=3000)  # more than an approximate index returns: exact fallback
    assert (many >= 0).all() and all(len(set(row)) == 3000 for row in many.tolist())


def test_a_deleted_ann_file_falls_back_to_exact_search(tmp_path):
    embeddings, queries = clustered_unit_vectors(300, seed=22), unit_vectors(5, seed=24)
    assert build_index(tmp_path, embeddings, "hnsw").uses_faiss_file
    for path in (tmp_path / "ann").glob("*.faiss"):
        path.unlink()
    missing = IndexReader.open(tmp_path)
    assert not missing.uses_faiss_file
    assert np.array_equal(missing.search(queries, 5)[1], brute_force(embeddings, queries, 5)[1])


def test_committed_rows_are_searched_before_finish_next_to_the_ann_file(tmp_path):
    embeddings = clustered_unit_vectors(200, seed=25)
    build_index(tmp_path, embeddings, "hnsw")
    changed = make_rows(["0.jpg"], unit_vectors(1, seed=26), version=1)  # same row count, new content
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(changed)
    reader = IndexReader.open(tmp_path)
    assert len(reader) == 200 and reader.uses_faiss_file
    similarities, ids = reader.search(changed[0].embedding[None], k=1)
    assert reader.paths_for(ids[0]) == ["/photos/0.jpg"]
    assert similarities[0, 0] == pytest.approx(1.0, abs=1e-5)
    _, old = reader.search(embeddings[:1], k=200)
    assert 0 not in old  # the replaced row's old id is masked in the ANN file


@pytest.mark.parametrize(
    "n_vectors, budget, expected",
    [
        (0, None, "flat"),
        (100_000, None, "flat"),
        (100_001, None, "ivf_flat"),
        (500_000, None, "ivf_flat"),
        (1_000_000, None, "ivf_sq8"),
        (1_000_000, 4 << 30, "ivf_flat"),
        (2_100_000, None, "ivf_pq"),
        (10_000_000, None, "ivf_pq"),
    ],
)
def test_choose_index_type_follows_size_and_memory_budget(n_vectors, budget, expected):
    assert choose_index_type(n_vectors, 512, budget) == expected


def test_index_directory_can_be_copied_and_moved(tmp_path):
    build_index(tmp_path / "a", clustered_unit_vectors(50, seed=28), "hnsw")
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert IndexReader.open(tmp_path / "b").uses_faiss_file


def test_recorded_settings_survive_reopening(tmp_path):
    with IndexWriter.open(tmp_path / "index", IDENTITY) as writer:
        assert writer.settings == {}
        writer.record_settings(index_type="hnsw", excludes=["*/tmp/*"])
        writer.record_settings(excludes=[])
    with IndexWriter.open(tmp_path / "index", IDENTITY) as writer:
        assert writer.settings == {"index_type": "hnsw", "excludes": []}
