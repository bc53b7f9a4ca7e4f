"""`--executor ray` on a real local Ray (started once per session): same index as the local executor.

Each Ray run pays for starting its actor pool (a worker importing torch and loading the model), so the
tests share one collection and as few runs as cover: equality with local (embeddings, failures, reasons),
re-runs, --from-list with file:// URLs through the CLI, and a SIGKILLed driver resumed without duplicates.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from bt_search.cli.app import app
from bt_search.distributed import index_with_ray, read_source_list
from bt_search.distributed.pipeline import ActorPlan, plan_actors, rows_per_block
from bt_search.engine.loading import load_engine
from bt_search.errors import UsageError
from bt_search.indexing.run import index_paths
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.hostile import write_hostile_files, write_real_world_files
from tests.support.images import noise_image


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> dict[str, Path]:
    """About 100 files: photos (PNG and draft-sized JPEG), awkward valid images, hostile files, a dangling link."""
    root = tmp_path_factory.mktemp("collection")
    photos = root / "photos"
    photos.mkdir()
    for i in range(80):
        image = noise_image(i, 60 + i, 50 + i % 13)
        image.save(photos / f"p{i:02d}.png") if i % 2 else image.resize((400, 300)).save(photos / f"p{i:02d}.jpg")
    real = write_real_world_files(root / "real")
    bad = write_hostile_files(root / "bad")
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    return {"root": root, "photos": photos, **{f"real {k}": v for k, v in real.items()}, **bad}


@pytest.fixture(scope="module")
def local_index(engine, collection, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("local") / "index"
    with IndexWriter.open(directory, IndexIdentity.of(engine)) as writer:
        index_paths([str(collection["root"])], writer, engine, workers=0, batch_size=8)
    return directory


def run_ray(engine, sources, directory, **kwargs):
    kwargs.setdefault("batch_size", 8)
    with IndexWriter.open(directory, IndexIdentity.of(engine)) as writer:
        return index_with_ray([str(s) for s in sources], writer, engine, **kwargs)


def rows_by_path(directory) -> dict[str, tuple]:
    reader = IndexReader.open(directory)
    return {
        row.path: (row.sha256, row.width, row.height, row.embedding)
        for row in (reader.row(int(i)) for i in reader.ids())
    }


def assert_same_rows(ray_rows: dict, local_rows: dict, path_of=lambda key: key) -> None:
    assert sorted(path_of(key) for key in ray_rows) == sorted(local_rows)
    for key, (sha256, width, height, embedding) in ray_rows.items():
        local = local_rows[path_of(key)]
        assert (sha256, width, height) == local[:3]
        np.testing.assert_allclose(embedding, local[3], atol=1e-5, rtol=0)


def failures(directory) -> dict[str, str]:
    return {row.path: row.reason for row in IndexReader.open(directory).failed()}


def test_ray_index_equals_local_and_a_rerun_embeds_nothing(ray_cluster, engine, collection, local_index, tmp_path):
    report = run_ray(engine, [collection["root"]], tmp_path / "index")

    assert_same_rows(rows_by_path(tmp_path / "index"), rows_by_path(local_index))
    local_failures = failures(local_index)
    assert failures(tmp_path / "index") == local_failures
    assert "bomb" in local_failures[str(collection["bomb"])] and len(local_failures) == 6  # 5 hostile + dangling
    assert report.indexed == len(IndexReader.open(local_index)) and len(report.skipped) == 6

    rerun = run_ray(engine, [collection["root"]], tmp_path / "index")
    assert (rerun.indexed, rerun.unchanged, rerun.failed_before) == (0, report.indexed, 5)  # dangling: a scan problem


def test_cli_from_list_of_file_urls_matches_local(ray_cluster, tiny_checkpoint, collection, local_index, tmp_path):
    files = sorted(collection["photos"].iterdir())[:10] + [collection["truncated"], collection["real cmyk jpeg"]]
    urls = ["file://" + str(path) for path in files]
    pq.write_table(pa.table({"caption": [f"c{i}" for i in range(len(urls))], "path": urls}), tmp_path / "list.parquet")
    args = ["index", "--from-list", tmp_path / "list.parquet", "--executor", "ray", "--index", tmp_path / "index"]
    result = CliRunner().invoke(app, [*map(str, args), "--model", str(tiny_checkpoint), "--batch-size", "4", "-q"])
    assert result.exit_code == 0, result.output

    local = {path: row for path, row in rows_by_path(local_index).items() if path in set(map(str, files))}
    assert_same_rows(rows_by_path(tmp_path / "index"), local, path_of=lambda url: url.removeprefix("file://"))
    truncated = "file://" + str(collection["truncated"])
    assert failures(tmp_path / "index") == {truncated: failures(local_index)[str(collection["truncated"])]}


TORCH_FREE_CLI = """
import atexit, sys
atexit.register(lambda: print("driver imported torch:", "torch" in sys.modules, file=sys.stderr))
from bt_search.cli.app import app
app()
"""


def test_ray_cli_driver_never_imports_torch(ray_cluster, tiny_checkpoint, collection, local_index, tmp_path):
    """The whole command as users run it, joining a running cluster: only the actors load torch and the model."""
    address, env = ray_cluster
    files = sorted(collection["photos"].iterdir())[:3]
    args = ["index", *files, "--executor", "ray", "--ray-address", address, "--index", tmp_path / "index"]
    command = [sys.executable, "-c", TORCH_FREE_CLI, *map(str, args), "--model", str(tiny_checkpoint), "-q"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "driver imported torch: False" in done.stderr
    local = {path: row for path, row in rows_by_path(local_index).items() if path in set(map(str, files))}
    assert_same_rows(rows_by_path(tmp_path / "index"), local)


def test_decode_runs_in_tasks_of_its_own_not_fused_into_the_actors(ray_cluster, engine, collection, capsys):
    """Fused, the actor would decode between batches, none of them while the model loads (issue 13's pattern)."""
    from bt_search.distributed.pipeline import embedding_dataset
    from bt_search.media.scan import FileRecord

    records = [
        FileRecord(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(collection["photos"].iterdir())
    ]
    embedding_dataset(records, engine, "cpu", "auto", batch_size=8).explain()
    optimized = capsys.readouterr().out.split("Physical Plan (Optimized)")[1]
    assert "ActorPoolMapOperator[MapBatches(Embedder)]" in optimized
    assert "TaskPoolMapOperator[MapBatches(decode_batch)]" in optimized


def test_driver_reads_the_index_identity_as_the_loader_does(checkpoints, tmp_path):
    """model_facts (no torch) gives the identity a loaded engine gives, for every layout and for bf16 weights."""
    from safetensors.torch import load_file, save_file

    from bt_search.engine.facts import driver_model, read_model_facts

    for name, checkpoint in checkpoints.items():
        assert IndexIdentity.of(read_model_facts(str(checkpoint))) == IndexIdentity.of(
            load_engine(str(checkpoint), device="cpu")
        ), name
    shutil.copytree(checkpoints["add-64-p16"], tmp_path / "bf16")
    tensors = load_file(tmp_path / "bf16" / "model.safetensors")
    save_file(
        {k: v.bfloat16() for k, v in tensors.items()},
        tmp_path / "bf16" / "model.safetensors",
        metadata={"format": "pt"},
    )
    facts, engine = read_model_facts(str(tmp_path / "bf16")), load_engine(str(tmp_path / "bf16"), device="cpu")
    assert (
        facts.fingerprint
        == engine.embedding_fingerprint()
        != read_model_facts(str(checkpoints["add-64-p16"])).fingerprint
    )
    shutil.copytree(checkpoints["add-64-p16"], tmp_path / "bin")
    (tmp_path / "bin" / "model.safetensors").unlink()
    torch.save(tensors, tmp_path / "bin" / "pytorch_model.bin")  # .bin weights: the text-only loader reads them
    assert read_model_facts(str(tmp_path / "bin")) is None
    assert IndexIdentity.of(driver_model(str(tmp_path / "bin"))) == IndexIdentity.of(
        load_engine(str(tmp_path / "bin"), device="cpu")
    )


DRIVER = """
import sys, time
from pathlib import Path
from bt_search.distributed import index_with_ray
from bt_search.indexing.progress import IndexProgress
from bt_search.engine.loading import load_engine
from bt_search.store import IndexIdentity, IndexWriter

address, checkpoint, photos, index, marker = sys.argv[1:]


class HangAfterCommits(IndexProgress):
    done = 0

    def advanced(self, count):
        self.done += count
        if self.done >= 8:  # 8 rows through commits of 4: at least one commit is on disk
            Path(marker).touch()
            time.sleep(600)


engine = load_engine(checkpoint, device="cpu")
with IndexWriter.open(index, IndexIdentity.of(engine)) as writer:
    index_with_ray([photos], writer, engine, batch_size=4, commit_rows=4, progress=HangAfterCommits(), address=address)
"""


def test_sigkilled_driver_resumes_without_duplicates(
    ray_cluster, engine, tiny_checkpoint, collection, local_index, tmp_path
):
    address, env = ray_cluster
    marker, index = tmp_path / "committed", tmp_path / "index"
    args = [address, tiny_checkpoint, collection["photos"], index, marker]
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, *map(str, args)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the driver committed nothing in 180 s"
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    committed = len(IndexReader.open(index))  # the reader sees committed segments
    assert 4 <= committed < 80

    report = run_ray(engine, [collection["photos"]], index)
    assert (report.indexed, report.unchanged) == (80 - committed, committed)
    reader = IndexReader.open(index)
    assert len(reader.paths) == len(set(reader.paths)) == 80
    local = {path: row for path, row in rows_by_path(local_index).items() if path.startswith(str(collection["photos"]))}
    assert_same_rows(rows_by_path(index), local)


def test_source_lists_in_text_csv_tsv_and_parquet_read_the_same(tmp_path):
    paths = ["/data/a b.jpg", "s3://bucket/x/1.png", "relative/c.webp"]
    (tmp_path / "list.txt").write_text("\n".join(paths[:2]) + "\n\n" + paths[2] + "\n")
    table = pa.table({"id": [1, 2, 3], "path": paths})
    pcsv.write_csv(table, tmp_path / "list.csv")
    pcsv.write_csv(table, tmp_path / "list.tsv", pcsv.WriteOptions(delimiter="\t"))
    pq.write_table(table, tmp_path / "list.parquet")
    pq.write_table(pa.table({"anything": paths}), tmp_path / "single.parquet")  # one column: it is the paths
    for name in ("list.txt", "list.csv", "list.tsv", "list.parquet", "single.parquet"):
        assert read_source_list(tmp_path / name) == paths, name
    pq.write_table(pa.table({"a": paths, "b": paths}), tmp_path / "ambiguous.parquet")
    with pytest.raises(UsageError, match="no path column"):
        read_source_list(tmp_path / "ambiguous.parquet")


def test_local_executor_reads_from_list_and_refuses_urls(tiny_checkpoint, collection, tmp_path):
    chosen = sorted(collection["photos"].iterdir())[:3]
    (tmp_path / "list.txt").write_text("\n".join(map(str, chosen)) + "\n")
    common = ["--index", str(tmp_path / "index"), "--model", str(tiny_checkpoint), "-q"]
    result = CliRunner().invoke(app, ["index", "--from-list", str(tmp_path / "list.txt"), *common])
    assert result.exit_code == 0, result.output
    assert sorted(IndexReader.open(tmp_path / "index").paths) == sorted(map(str, chosen))

    refused = CliRunner().invoke(app, ["index", "file://" + str(chosen[0]), *common])
    assert refused.exit_code == 2 and "--executor ray" in refused.output


@pytest.mark.parametrize(
    "device, actors, cluster, expected",
    [
        ("auto", None, {"CPU": 16, "GPU": 8}, ActorPlan(8, 1.0, "cuda", 1)),
        ("cuda", 2, {"CPU": 16, "GPU": 8}, ActorPlan(2, 1.0, "cuda", 1)),
        ("auto", None, {"CPU": 2}, ActorPlan(1, 0.0, "cpu", 2)),
        ("cpu", 3, {"CPU": 12, "GPU": 4}, ActorPlan(3, 0.0, "cpu", 4)),
    ],
)
def test_actor_plan_one_gpu_per_actor_or_cpu_threads_shared(device, actors, cluster, expected):
    assert plan_actors(device, actors, cluster) == expected


def test_actor_plan_refuses_cuda_without_gpus_and_other_devices():
    with pytest.raises(UsageError, match="no GPUs"):
        plan_actors("cuda", None, {"CPU": 4})
    with pytest.raises(UsageError, match="mps"):
        plan_actors("mps", None, {"CPU": 4})


@pytest.mark.parametrize(
    "rows, cpus, batch, expected",
    [(100, 2, 1, 25), (100, 2, 8, 32), (1, 8, 4, 4), (10**8, 512, 16, 1024), (0, 2, 1, 1)],
)
def test_rows_per_block_spreads_over_cpus_caps_block_size_and_holds_whole_batches(rows, cpus, batch, expected):
    assert rows_per_block(rows, cpus, batch) == expected


def test_ray_decode_caps_bytes_read_like_the_local_one(engine, tmp_path, monkeypatch):
    """Issue 11 item 4 on the Ray path: a huge file is skipped with the local reason, never read whole."""
    from bt_search.distributed.stages import decode_record as ray_decode
    from bt_search.media.decoding import decode_record as local_decode
    from bt_search.media.scan import FileRecord

    monkeypatch.setenv("BT_SEARCH_MAX_FILE_MB", "1")
    huge = tmp_path / "huge.tif"
    with open(huge, "wb") as handle:
        os.truncate(handle.fileno(), 8 << 20)  # 8 MiB, sparse, over the 1 MiB cap
    small = tmp_path / "small.png"
    noise_image(7, 64, 64).save(small)
    for path in (huge, small):
        record = FileRecord(str(path), path.stat().st_size, path.stat().st_mtime_ns)
        local = local_decode(record, engine.preprocessing, draft=True)
        for source in (str(path), path.as_uri()):
            remote = ray_decode(FileRecord(source, record.size, record.mtime_ns), engine.preprocessing, draft=True)
            if path is huge:
                assert remote == (source, local[1]) and "too large" in local[1]
            else:
                assert remote.sha256 == local.sha256 and np.array_equal(remote.pixels, local.pixels)


def test_ray_stages_keep_capture_info_as_the_local_indexer_does(engine, tmp_path):
    """EXIF capture columns travel through decode_batch and the embedder's output into the index rows."""
    from bt_search.distributed.pipeline import rows_and_failures
    from bt_search.distributed.stages import decode_batch
    from bt_search.media.exif import read_capture
    from tests.support.exif_photos import write_photos

    folder = tmp_path / "photos"
    write_photos(folder)
    paths = sorted(folder.iterdir())
    listing = {
        "path": np.array([str(p) for p in paths], dtype=object),
        "size": np.array([p.stat().st_size for p in paths], dtype=np.int64),
        "mtime_ns": np.array([p.stat().st_mtime_ns for p in paths], dtype=np.int64),
    }
    batch = decode_batch(listing, engine.preprocessing, draft=True)
    batch["embedding"] = np.eye(len(paths), engine.embedding_dim, dtype=np.float32)
    rows, failed = rows_and_failures(batch)
    assert not failed and len(rows) == len(paths)
    captured = {row.path: (row.taken_at, row.camera_make, row.camera_model) for row in rows}
    expected = {str(p): tuple(read_capture(p).as_fields().values()) for p in paths}
    assert captured == expected and any(value[0] for value in expected.values())
