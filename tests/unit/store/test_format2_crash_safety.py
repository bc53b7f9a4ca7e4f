"""Format 2: appends, tombstones and compaction against a brute-force model; kill -9 at chosen points;
the v1 -> v2 upgrade of a real v1 index; the kept index type; readers under a concurrent writer."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from bt_search.store import FailedRow, ImageRow, IndexIdentity, IndexReader, IndexWriter
from bt_search.store.compaction import FANOUT, plan_merge
from bt_search.store.v1 import upgrade
from tests.support.paths import REPO_ROOT, TEST_DATA
from tests.support.store_rows import IDENTITY, image_row, vector

V1_INDEX = TEST_DATA / "v1-index"
V1_EXPECTED = TEST_DATA / "v1-index-expected.json"


def reader_state(reader: IndexReader) -> dict[str, tuple]:
    ids = reader.ids()
    paths = reader.paths_for(ids)
    assert len(set(paths)) == len(paths) == len(reader), "duplicate or uncounted rows"
    embeddings = reader.embeddings_for(ids)
    return {p: (reader.row(i).sha256, e.tobytes()) for p, i, e in zip(paths, ids, embeddings)}


def model_state(model: dict[str, ImageRow]) -> dict[str, tuple]:
    return {p: (r.sha256, np.asarray(r.embedding, np.float32).tobytes()) for p, r in model.items()}


def check_search(reader: IndexReader, model: dict[str, ImageRow], exact: bool) -> None:
    """Every live row and nothing else comes back for k = N; flat results equal brute force."""
    if not model:
        assert reader.search(vector(1)[None], 5)[1].shape == (1, 0)
        return
    queries = np.stack([vector(s) for s in range(3)])
    similarities, ids = reader.search(queries, len(model))
    for row in ids:
        assert sorted(reader.paths_for(row)) == sorted(model), "a removed row came back, or a live one is missing"
    if exact:
        embeddings = np.stack([model[p].embedding for p in reader.paths_for(ids[0])])
        truth = np.sort(queries @ np.stack([r.embedding for r in model.values()]).T, axis=1)[:, ::-1]
        np.testing.assert_allclose(similarities, truth, atol=1e-5)
        np.testing.assert_allclose(similarities[0], embeddings @ queries[0], atol=1e-5)


@pytest.mark.parametrize("seed, index_type", [(1, "flat"), (2, "hnsw"), (3, "ivf_flat"), (4, None), (5, "ivf_pq")])
def test_random_commits_match_a_brute_force_model(tmp_path, seed, index_type):
    chance = random.Random(seed)
    names = [f"{i}.jpg" for i in range(60)]
    model: dict[str, ImageRow] = {}
    failures: dict[str, FailedRow] = {}
    version = 0
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        for step in range(40):
            version += 1
            picked = chance.sample(names, chance.randint(1, 9))
            rows = [image_row(n, version, chance.choice([None, "Canon"])) for n in picked[: len(picked) // 2 + 1]]
            failed = [FailedRow(f"/p/{n}", "broken", 1, 2) for n in picked[len(rows) : len(rows) + 1]]
            removed = [f"/p/{n}" for n in picked[len(rows) + len(failed) :]]
            writer.commit(rows, failed=failed, removed=removed)
            for row in rows:
                model[row.path] = row
                failures.pop(row.path, None)
            for failure in failed:
                model.pop(failure.path, None)
                failures[failure.path] = failure
            for path in removed:
                model.pop(path, None)
                failures.pop(path, None)
            if step % 7 == 6:
                writer.finish(index_type)
            reader = IndexReader.open(tmp_path)
            assert reader_state(reader) == model_state(model)
            assert sorted(reader.failed(), key=lambda f: f.path) == sorted(failures.values(), key=lambda f: f.path)
            assert writer.known_files() == {p: (r.size, r.mtime_ns, r.sha256) for p, r in model.items()}
            check_search(reader, model, exact=index_type in ("flat", None))
        writer.finish(index_type)
        manifest = writer.manifest
    reader = IndexReader.open(tmp_path)
    assert reader_state(reader) == model_state(model)
    check_search(reader, model, exact=index_type in ("flat", None))
    canon = {p for p, r in model.items() if r.camera_make == "Canon"}
    assert set(reader.paths_for(reader.ids_where(pc.field("camera_make") == "Canon"))) == canon
    levels = [part["level"] for part in manifest["parts"]]
    assert all(levels.count(level) < FANOUT for level in set(levels)), "compaction keeps parts O(log N)"
    assert manifest["counts"]["images"] == len(model)
    on_disk = {f"{d.name}/{f.name}" for d in tmp_path.iterdir() if d.is_dir() for f in d.iterdir()}
    named = {e["file"] for k in ("parts", "tombstones", "failed_parts") for e in manifest[k]}
    named |= {manifest["ann"]["file"], manifest["ann"]["dead_file"]} - {None} if manifest["ann"] else set()
    named |= set(((manifest["ann"] or {}).get("exact_copy") or {}).values())
    assert on_disk == named, "finish() leaves no orphans"


def test_parts_read_as_one_dataset_with_the_documented_tombstone_filter(tmp_path):
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit([image_row(n, 1) for n in "abcd"])
        writer.commit([image_row("a", 2)], removed=["/p/b"])
    tombstones = ds.dataset(str(tmp_path / "tombstones"), format="parquet").to_table().column("row_id")
    parts = ds.dataset(str(tmp_path / "parts"), format="parquet")
    live = parts.to_table(filter=~pc.field("row_id").isin(tombstones))
    assert sorted(live.column("sha256").to_pylist()) == ["sha-a-2", "sha-c-1", "sha-d-1"]

    import duckdb

    sql = (
        f"SELECT sha256 FROM read_parquet('{tmp_path}/parts/*.parquet') "
        f"WHERE row_id NOT IN (SELECT row_id FROM read_parquet('{tmp_path}/tombstones/*.parquet')) ORDER BY sha256"
    )
    assert [r[0] for r in duckdb.sql(sql).fetchall()] == ["sha-a-2", "sha-c-1", "sha-d-1"]


@pytest.mark.parametrize(
    "levels, dead, expected",
    [
        ([0, 0, 0], [0, 0, 0], None),
        ([0, 0, 0, 0], [0, 0, 0, 0], (0, 4, 1)),
        ([2, 1, 1, 1, 1, 0, 0], [0] * 7, (1, 5, 2)),
        ([1, 0, 0, 0, 0], [0] * 5, (1, 5, 1)),
        ([1, 0], [6, 0], (0, 1, 1)),  # 6 of 10 rows dead: rewritten alone
    ],
)
def test_plan_merge_is_size_tiered(levels, dead, expected):
    parts = [{"level": level, "rows": 10} for level in levels]
    assert plan_merge(parts, dead) == expected


# --- kill -9 at chosen points -------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from bt_search.store import IndexIdentity, IndexWriter, files, compaction, writer as writer_module
    from bt_search.store.ann import faiss_index as ann, exact_copy, upkeep
    from tests.support.store_rows import image_row, IDENTITY

    directory, target, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    owner, name = target.split(":")
    module = {"files": files, "compaction": compaction, "upkeep": upkeep, "writer": writer_module, "ann": ann,
              "exact_copy": exact_copy}[owner]
    real, calls = getattr(module, name), []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(module, name, dying)
    with IndexWriter.open(directory, IDENTITY) as writer:
        for step in range(12):
            removed = [f"/p/{4 * step - 6}.jpg"] if step % 3 == 2 else []
            writer.commit([image_row(f"{i}.jpg", step) for i in range(4 * step - 1, 4 * step + 3)], removed=removed)
            print("committed", step, flush=True)
            if step % 4 == 3:
                writer.finish(["hnsw", "ivf_pq", "ivf_pq"][step // 4])
                print("finished", step, flush=True)
    """
)


def models_after_each_commit() -> list[dict[str, ImageRow]]:
    model: dict[str, ImageRow] = {}
    states = [dict(model)]
    for step in range(12):
        for i in range(4 * step - 1, 4 * step + 3):  # one replaced row per commit, three new ones
            model[f"/p/{i}.jpg"] = image_row(f"{i}.jpg", step)
        if step % 3 == 2:
            model.pop(f"/p/{4 * step - 6}.jpg", None)
        states.append(dict(model))
    return states


def run_child(directory: Path, target: str, nth: int) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), target, str(nth)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode in (0, -signal.SIGKILL), result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    "target, nth",
    [
        ("writer:write_parquet", 3),  # inside a commit, between its part and its tombstones
        ("writer:write_manifest", 6),  # a commit's files written, its manifest not
        ("compaction:write_parquet", 1),  # a merged part half-done (compaction inside a commit)
        ("compaction:write_parquet", 3),  # the ANN's dead-row list, after a fold wrote its file
        ("ann:add_vectors", 1),  # an HNSW build
        ("ann:add_vectors", 3),  # a fold into the IVF-PQ index
        ("ann:write_index", 2),  # the IVF-PQ file half-written
        ("exact_copy:durable_replace", 2),  # the exact copy's ids renamed, its vectors not
        ("exact_copy:durable_replace", 4),  # a fold's exact copy
        ("upkeep:write_ann_dead", 1),
        ("writer:remove_orphans", 3),  # manifest committed, superseded files not yet deleted
    ],
)
def test_kill_9_at_a_chosen_point_loses_nothing_committed_and_duplicates_nothing(tmp_path, target, nth):
    states = models_after_each_commit()
    lines = run_child(tmp_path / "idx", target, nth)
    assert "finished 11" not in lines, "the kill must land mid-run"
    committed = sum(line.startswith("committed") for line in lines)
    reader = IndexReader.open(tmp_path / "idx")
    got = reader_state(reader)
    after = states[min(committed + 1, len(states) - 1)]  # a kill in the last finish() follows the last commit
    assert got in (model_state(states[committed]), model_state(after)), "lost or half a commit"
    check_search(reader, states[committed] if got == model_state(states[committed]) else after, False)

    assert run_child(tmp_path / "idx", "files:write_parquet", 0)[-1] == "finished 11"  # rerun, no kill
    reader = IndexReader.open(tmp_path / "idx")
    assert reader_state(reader) == model_state(states[-1])
    check_search(reader, states[-1], False)


# --- v1 -> v2 ------------------------------------------------------------------------------------


def expected_v1() -> dict:
    return json.loads(V1_EXPECTED.read_text())


def assert_reads_as_expected(reader: IndexReader) -> None:
    expected = expected_v1()
    paths = reader.paths_for(reader.ids())
    assert sorted(paths) == sorted(expected["images"])
    for path, embedding in zip(paths, reader.embeddings_for(reader.ids())):
        np.testing.assert_array_equal(embedding, np.array(expected["images"][path], np.float32))
    assert [r.__dict__ for r in reader.failed()] == expected["failed"]


def test_a_real_v1_index_reads_then_upgrades_in_place_on_first_write(tmp_path):
    index = tmp_path / "v1"
    shutil.copytree(V1_INDEX, index)
    reader = IndexReader.open(index)
    assert reader.manifest["format_version"] == 1
    assert_reads_as_expected(reader)
    identity = IndexIdentity.from_manifest(reader.manifest)

    with IndexWriter.open(index, identity) as writer:
        assert writer.manifest["format_version"] == 2
        assert sorted(os.listdir(index)) == ["failed", "lock", "manifest.json", "parts"]  # v1 files gone
        writer.finish()
    upgraded = IndexReader.open(index)
    assert upgraded.manifest["format_version"] == 2 and upgraded.uses_faiss_file
    assert_reads_as_expected(upgraded)
    expected = expected_v1()
    for record in expected["rows"]:
        (row_id,) = upgraded.ids_where(pc.field("path") == record["path"])
        row = upgraded.row(row_id)
        assert {key: getattr(row, key) for key in record} == record
        assert (row.taken_at, row.camera_make, row.camera_model) == (None, None, None)
    _, ids = upgraded.search(np.array([expected["images"][expected["rows"][0]["path"]]], np.float32), 1)
    assert upgraded.paths_for(ids[0]) == [expected["rows"][0]["path"]]


class Crash(BaseException):
    pass


def test_an_upgrade_interrupted_before_its_manifest_leaves_the_v1_index_intact(tmp_path, monkeypatch):
    index = tmp_path / "v1"
    shutil.copytree(V1_INDEX, index)
    identity = IndexIdentity.from_manifest(json.loads((index / "manifest.json").read_text()))

    def crash(*args, **kwargs):
        raise Crash()

    with monkeypatch.context() as patch:
        patch.setattr(upgrade, "write_manifest", crash)
        with pytest.raises(Crash):
            IndexWriter.open(index, identity)
    assert list((index / "parts").iterdir())  # the new part was written ...
    reader = IndexReader.open(index)  # ... but the index is still the v1 one, whole
    assert reader.manifest["format_version"] == 1
    assert_reads_as_expected(reader)
    IndexWriter.open(index, identity).close()  # the next write upgrades
    assert_reads_as_expected(IndexReader.open(index))
    assert IndexReader.open(index).manifest["format_version"] == 2


# --- the chosen index type ------------------------------------------------------------------------


def test_the_chosen_index_type_is_kept_until_chosen_again(tmp_path):
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit([image_row(f"{i}.jpg", 1) for i in range(30)])
        writer.finish("hnsw")
    for _ in range(2):
        with IndexWriter.open(tmp_path, IDENTITY) as writer:
            writer.finish()  # nothing changed, no type given
        assert IndexReader.open(tmp_path).manifest["index_type"] == "hnsw"
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit([image_row("new.jpg", 1)])
        writer.finish()
    assert IndexReader.open(tmp_path).manifest["index_type"] == "hnsw"
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.finish("auto")
    assert IndexReader.open(tmp_path).manifest["index_type"] == "flat"


# --- concurrent readers ---------------------------------------------------------------------------

WRITER_LOOP = textwrap.dedent(
    """
    import sys
    from bt_search.store import IndexWriter
    from tests.support.store_rows import image_row, IDENTITY

    with IndexWriter.open(sys.argv[1], IDENTITY) as writer:
        for version in range(2, 40):
            writer.commit([image_row(f"{i}.jpg", version) for i in range(6)])
            writer.finish()
    print("done", flush=True)
    """
)


def test_a_reader_never_mixes_states_while_a_writer_commits_and_compacts(tmp_path):
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit([image_row(f"{i}.jpg", 1) for i in range(6)])
        writer.finish()
    root = REPO_ROOT
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER_LOOP, str(tmp_path)], cwd=root, env={**os.environ, "PYTHONPATH": str(root)}
    )
    opened = 0
    try:
        while child.poll() is None or opened < 5:
            reader = IndexReader.open(tmp_path)
            versions = {reader.row(i).size for i in reader.ids()}
            assert len(reader) == 6 and len(versions) == 1, f"a mixture of runs: {versions}"
            _, ids = reader.search(np.stack([vector(1)]), 6)
            assert len(set(reader.paths_for(ids[0]))) == 6
            opened += 1
    finally:
        child.wait(timeout=60)
    assert child.returncode == 0


def test_cli_index_keeps_the_index_type_the_user_chose(tmp_path, tiny_checkpoint):
    """Issue 11 item 13: a plain `index` after `index --index-type hnsw` must not revert to flat."""
    from tests.support.cli import cli_index
    from tests.support.images import write_pngs

    photos = tmp_path / "photos"
    write_pngs(photos, [f"{i}.png" for i in range(4)], size=(40, 40))

    def index(*extra):
        cli_index([photos], tmp_path / "idx", tiny_checkpoint, "-q", *extra)  # the CLI, in-process
        return json.loads((tmp_path / "idx" / "manifest.json").read_text())

    assert index("--index-type", "hnsw")["index_type"] == "hnsw"
    kept = index()
    assert kept["index_type"] == "hnsw" and kept["ann"]["type"] == "hnsw"
    assert (tmp_path / "idx" / kept["ann"]["file"]).exists()
