"""`bt-search index` as a user runs it: SIGKILL at random points then resume, two writers, reading while
writing, skipped files, exit codes. Most run the real command in a subprocess (a kill, a lock or an exit code
needs a process of its own)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bt_search.store import IndexIdentity, IndexReader
from tests.support.cli import bt_search, bt_search_env, cli, cli_index, indexed_paths
from tests.support.hostile import write_hostile_files
from tests.support.images import noise_image, write_pngs


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i in range(40):
        noise_image(i, 64 + i % 7, 64).save(folder / f"p{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def clean_index(photo_dir, tiny_checkpoint, tmp_path_factory):
    index = tmp_path_factory.mktemp("clean") / "index"
    cli_index([photo_dir], index, tiny_checkpoint, "--batch-size", "3", "--quiet")  # in-process: a reference
    return index


def _by_path(index):
    reader = IndexReader.open(index)
    assert len(set(reader.paths)) == len(reader.paths), "no duplicates"
    return {p: reader.embeddings[i] for i, p in enumerate(reader.paths)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_point_then_rerun_matches_a_clean_run(
    seed, photo_dir, tiny_checkpoint, clean_index, tmp_path
):
    index = tmp_path / "index"
    args = [
        "index",
        photo_dir,
        "--index",
        index,
        "--model",
        tiny_checkpoint,
        "--batch-size",
        "3",
        "--commit-every",
        "3",
        "--workers",
        "1",
        "--quiet",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "bt_search", *map(str, args)], env=bt_search_env(), stderr=subprocess.PIPE
    )
    chance = random.Random(seed)
    segments_before_kill = chance.randint(1, 8)  # of 14 batches: the kill lands mid-run, at a random batch
    _wait_for(lambda: _committed_images(index) >= 3 * segments_before_kill, process)
    time.sleep(chance.uniform(0.0, 0.05))  # ... and at a random point inside the next batch
    workers = _children(process.pid)
    assert workers, "a decode worker must be running, to check that it dies with its parent"
    process.send_signal(signal.SIGKILL)
    process.wait()
    _wait_for(lambda: not any(_alive(pid) for pid in workers), None, timeout=10.0)

    survived = IndexReader.open(index)  # opens after kill -9, seeing committed batches
    committed = len(survived)
    assert 0 < committed < 40, "the kill must land mid-run for this test to mean anything"

    # The resume runs in-process (inline decoding): what the killed process left is the subject.
    rerun = cli_index([photo_dir], index, tiny_checkpoint, "--batch-size", "3", "--commit-every", "3")  # summary
    assert f"{40 - committed} indexed, {committed} unchanged" in rerun.stderr, "committed work is not redone"
    clean, resumed = _by_path(clean_index), _by_path(index)
    assert sorted(clean) == sorted(resumed)
    for path, embedding in clean.items():
        np.testing.assert_allclose(resumed[path], embedding, atol=1e-5)


def _committed_images(index) -> int:
    """Images the manifest (the commit point, replaced atomically) says are committed."""
    try:
        return json.loads((index / "manifest.json").read_text())["counts"]["images"]
    except FileNotFoundError:
        return 0


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(c) for c in open(path).read().split()] if os.path.exists(path) else []


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a reaper."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_for(condition, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"indexer exited early: {process.stderr.read()}")
        if time.monotonic() > deadline:
            if process is not None:
                process.kill()
            raise AssertionError("timed out waiting (no progress, or workers outliving their parent)")
        time.sleep(0.02)


def test_second_writer_is_told_the_index_is_locked_and_readers_still_work(engine, photo_dir, tiny_checkpoint, tmp_path):
    from bt_search.indexing.run import _embed
    from bt_search.media.decoding import decode_record
    from bt_search.media.scan import FileRecord
    from bt_search.store import IndexWriter

    index = tmp_path / "index"
    with IndexWriter.open(index, IndexIdentity.of(engine)) as writer:
        path = photo_dir / "p00.png"
        record = FileRecord(str(path), path.stat().st_size, path.stat().st_mtime_ns)
        writer.commit(_embed(engine, [decode_record(record, engine.preprocessing, draft=True)]))
        second = bt_search("index", photo_dir, "--index", index, "--model", tiny_checkpoint, "--quiet")
        assert second.returncode == 1
        assert "locked" in second.stderr and "Traceback" not in second.stderr
        reading = bt_search("query", "a red circle", "--index", index, "--format", "paths")
        assert reading.returncode == 0, reading.stderr
        assert reading.stdout.splitlines() == [str(path)]


def test_strict_turns_skips_into_exit_3(tiny_checkpoint, tmp_path):
    folder = tmp_path / "mixed"
    write_hostile_files(folder)
    noise_image(0, 40, 40).save(folder / "fine.png")
    relaxed = cli("index", folder, "--index", tmp_path / "a", "--model", tiny_checkpoint)  # in-process
    assert relaxed.exit_code == 0
    assert "bomb.png" in relaxed.stderr and "decompression bomb" in relaxed.stderr and relaxed.stdout == ""
    strict = bt_search("index", folder, "--index", tmp_path / "b", "--model", tiny_checkpoint, "--strict", "--quiet")
    assert strict.returncode == 3 and len(IndexReader.open(tmp_path / "b")) == 1


def test_a_huge_sparse_file_is_skipped_with_a_reason(tiny_checkpoint, tmp_path):
    photos = write_pngs(tmp_path / "big", ["a.png", "c.png"])
    huge = tmp_path / "big" / "b.tif"
    with open(huge, "wb") as handle:
        os.truncate(handle.fileno(), 64 << 30)  # 64 GiB, sparse: no disk used
    result = cli_index([tmp_path / "big"], tmp_path / "index", tiny_checkpoint)  # in-process: no need for a child
    assert indexed_paths(tmp_path / "index") == sorted(str(p) for p in photos)
    failed = {row.path: row.reason for row in IndexReader.open(tmp_path / "index").failed()}
    assert "too large" in failed[str(huge)] and "b.tif" in result.stderr


def test_usage_errors_exit_2(tmp_path):
    result = bt_search("index", tmp_path / "does-not-exist", "--index", tmp_path / "i")
    assert result.returncode == 2 and "no such file" in result.stderr
