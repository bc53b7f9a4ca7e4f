"""The Ray Data executor against the local one, on the same JPEGs, model and machine, in one run.

    python benchmarks/bench_distributed.py --images 64 --batch-size 8

Both index the same 1600x1200 JPEGs with the same base-shaped random checkpoint into fresh indexes. The
local executor's model is loaded (and warmed) before its clock starts; Ray is started before the Ray
clock starts (an existing cluster is the case `--ray-address` serves), but the Ray run's own actor start
and model load are inside it, since every run pays them. Two figures per side:
- end to end: images / wall time of the whole call (listing, plan, pipeline, commits, finish);
- steady state: images after the first batch / time from the first batch to the last, which leaves out the
  actor pool's start-up, a fixed cost per run that a large run amortises;
- as whole runs: the local end-to-end time plus its own model load, against the Ray end-to-end time (whose
  actors load the model inside it), as two `bt-search index` commands compare.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class Clock:
    """An IndexProgress that timestamps every batch the executor reports."""

    def __init__(self):
        self.events: list[tuple[float, int]] = []

    def started(self, to_embed, unchanged):
        self.start = time.perf_counter()

    def advanced(self, count):
        self.events.append((time.perf_counter(), count))

    def skipped(self, path, reason):
        pass

    def rates(self) -> tuple[float, float]:
        """(end-to-end images/s from started(), steady-state images/s after the first batch)."""
        total = sum(count for _, count in self.events)
        (first_time, first_count), last_time = self.events[0], self.events[-1][0]
        steady = (total - first_count) / (last_time - first_time) if last_time > first_time else float("nan")
        return total / (last_time - self.start), steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shape", choices=["base", "large"], default="base", help="random checkpoint shapes")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    args = parser.parse_args()

    import numpy as np
    import ray
    import torch
    from bench_index import write_photos
    from common import shaped_checkpoint

    from bt_search.distributed import index_with_ray
    from bt_search.indexer import identity_for, index_paths
    from bt_search.loading import load_engine
    from bt_search.store import IndexReader, IndexWriter

    checkpoint = shaped_checkpoint(args.shape)
    work = Path(tempfile.mkdtemp(prefix="bt-bench-ray-"))
    write_photos(work / "photos", args.images)
    loading = time.perf_counter()
    engine = load_engine(str(checkpoint), device="cpu")
    crop = engine.preprocessing.crop
    engine.encode_images(np.zeros((args.batch_size, crop, crop, 3), np.uint8))  # warm the local model
    local_load_s = time.perf_counter() - loading  # what a local `bt-search index` run pays before its first image

    def run(name, executor, **kwargs):
        clock = Clock()
        with IndexWriter.open(work / name, identity_for(engine)) as writer:
            report = executor([str(work / "photos")], writer, engine, batch_size=args.batch_size, progress=clock, **kwargs)
        assert report.indexed == args.images, report
        return clock.rates()

    local_total, local_steady = run("local", index_paths, workers=None)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ray_total, ray_steady = run("ray", index_with_ray)
    ray.shutdown()
    local, distributed = IndexReader.open(work / "local"), IndexReader.open(work / "ray")
    by_path = dict(zip(local.paths, local.embeddings))
    max_diff = max(float(np.abs(by_path[p] - e).max()) for p, e in zip(distributed.paths, distributed.embeddings))

    print(f"images={args.images} (1600x1200 JPEG) shape={args.shape} batch={args.batch_size} cpu fp32, "
          f"torch_threads={torch.get_num_threads()}; max |embedding diff| ray vs local = {max_diff:.1e}")
    print(f"local executor:  {local_total:7.2f} images/s end to end, {local_steady:7.2f} steady state")
    print(f"ray executor:    {ray_total:7.2f} images/s end to end, {ray_steady:7.2f} steady state")
    print(f"ray / local: {ray_total / local_total:.2f}x end to end, {ray_steady / local_steady:.2f}x steady state")
    # As whole runs: the Ray clock holds its actors' model load; give the local clock its own (loaded once above).
    local_whole = args.images / (args.images / local_total + local_load_s)
    print(f"as whole runs (each side's model load inside its clock; local load {local_load_s:.1f} s): "
          f"local {local_whole:.2f} images/s, ray / local {ray_total / local_whole:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
