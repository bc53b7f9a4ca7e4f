"""`bt-search duplicates` at scale: time and peak memory of duplicate_groups over N synthetic 512-d rows.

Each index holds N clustered vectors (bench_scale's) in which 1% of rows are planted near-copies of another row
(cosine ~0.99, what a re-encode or resize gives; docs/performance.md). It is built through the public IndexWriter
with the ANN kind `auto` picks for N under the default 1 GiB budget. duplicate_groups then runs in a fresh
process (cold open, memory-mapped FAISS file, OMP_WAIT_POLICY=PASSIVE as `bt-search duplicates` sets it), which
reports wall time, its peak RSS above the imports, and how
many of the planted pairs it found: it asks the index for each row's 8 nearest, O(N·k), never N x N.

    python benchmarks/bench_duplicates.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale import DIM, rows_for, synthetic  # noqa: E402

from bt_search.store import IndexIdentity, IndexWriter, choose_index_type  # noqa: E402

CHUNK = 20_000
PLANTED = 0.01  # share of rows that are a near-copy of another row

RUN = """
import json, sys, time
def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
from bt_search.search.duplicates import duplicate_groups
from bt_search.store import IndexReader
base = status("VmRSS:")
started = time.perf_counter()
reader = IndexReader.open(sys.argv[1])
groups = duplicate_groups(reader)
seconds = time.perf_counter() - started
pairs = [[int(p.rsplit("/", 1)[1][:9]) for p in g.paths] for g in groups]
print(json.dumps({"seconds": seconds, "rss_mb": (status("VmHWM:") - base) / 1024, "groups": pairs,
                  "kind": reader.manifest["index_type"]}))
"""


def build(directory: Path, n: int) -> tuple[float, set[tuple[int, int]]]:
    """N rows with planted near-copies; (seconds, the planted (source, copy) row pairs)."""
    rng = np.random.default_rng(5)
    planted = set()
    started = time.perf_counter()
    with IndexWriter.open(directory, IndexIdentity("synthetic/512", None, DIM, {})) as writer:
        for start in range(0, n, CHUNK):
            vectors = synthetic(min(CHUNK, n - start), seed=start + 1)
            copies = rng.choice(len(vectors), size=int(len(vectors) * PLANTED * 2), replace=False)
            for source, copy in zip(copies[::2], copies[1::2]):
                noisy = vectors[source] + 0.14 * rng.standard_normal(DIM).astype(np.float32) / np.sqrt(DIM)
                vectors[copy] = noisy / np.linalg.norm(noisy)
                planted.add((start + int(min(source, copy)), start + int(max(source, copy))))
            writer.commit(rows_for(vectors, start))
        writer.record_settings(capture_info=True)
        writer.finish(choose_index_type(n, DIM, None), None)
    return time.perf_counter() - started, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-duplicates-"))
    print(
        f"{'N':>9} {'ANN':>8} {'build s':>8} {'duplicates s':>12} {'rows/s':>8} {'peak RSS MB':>11} "
        f"{'planted found':>13} {'other groups':>12}",
        flush=True,
    )
    try:
        for n in args.sizes:
            directory = work / f"idx-{n}"
            build_s, planted = build(directory, n)
            out = subprocess.run(
                [sys.executable, "-c", RUN, str(directory)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"},  # as the CLI sets it
                check=True,
            )
            result = json.loads(out.stdout)
            found = {tuple(g) for g in result["groups"] if len(g) == 2}
            hit = len(planted & found) / len(planted)
            other = sum(1 for g in result["groups"] if tuple(g) not in planted)
            print(
                f"{n:>9} {result['kind']:>8} {build_s:8.1f} {result['seconds']:12.1f} {n / result['seconds']:8.0f} "
                f"{result['rss_mb']:11.0f} {hit:13.3f} {other:12d}",
                flush=True,
            )
            shutil.rmtree(directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
