"""Index at scale: what an incremental run and a cold query cost as the index grows (issue "Index at scale").

For each N it builds a synthetic index of N clustered 512-d embeddings through the public IndexWriter and prints:
build time; the time to add 10 images (commit + finish, ANN upkeep included); a cold open + search + paths
in a fresh process and that process's peak RSS; recall@50 against exact search for image-like queries and
for gap-shifted ones (drawn away from the images, as text queries sit in CLIP-like spaces). Then a whole
`bt-search index NEW_FOLDER` process for 10 new photos (demo model) on a small and on the largest index.

    python benchmarks/bench_scale.py --sizes 10000 100000 1000000 [--plot docs/scale.png]
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

from bt_search.store import (
    ImageRow,
    IndexIdentity,
    IndexReader,
    IndexWriter,
    choose_index_type,
)
from bt_search.store.ann.faiss_index import parse_bytes

DIM = 512
CLUSTERS = 256
CHUNK = 20_000
K = 50


def synthetic(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Clustered unit vectors (uniform points on a sphere have no neighbours; embeddings do)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((CLUSTERS, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, CLUSTERS, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def gap_queries(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Queries offset from the image distribution by one shared direction (the modality gap)."""
    images = synthetic(n, seed, dim)
    gap = np.random.default_rng(99).standard_normal(dim).astype(np.float32)
    shifted = (
        images
        + 0.8 * gap / np.linalg.norm(gap)
        + 0.3 * np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    )
    return shifted / np.linalg.norm(shifted, axis=1, keepdims=True)


def rows_for(vectors: np.ndarray, start: int, folder: str = "/synthetic") -> list[ImageRow]:
    return [
        ImageRow(f"{folder}/{start + i:09d}.jpg", 1000, 1, f"{start + i:064x}", 64, 64, v)
        for i, v in enumerate(vectors)
    ]


def build(directory: Path, identity: IndexIdentity, n: int, dim: int, budget: int | None) -> tuple[float, np.ndarray]:
    """Commit N synthetic rows, then finish with the type `auto` picks for N under the memory budget,
    recorded as the user's choice (so that the adds below measure steady-state upkeep, not a one-time
    switch of kind at a threshold)."""
    started = time.perf_counter()
    everything = []
    with IndexWriter.open(directory, identity) as writer:
        for start in range(0, n, CHUNK):
            vectors = synthetic(min(CHUNK, n - start), seed=start + 1, dim=dim)
            everything.append(vectors)
            writer.commit(rows_for(vectors, start))
        # As an index built by `bt-search index` records it; without it, the first CLI run below would do
        # the one-time EXIF upgrade of an index from before capture columns (O(N) header reads).
        writer.record_settings(capture_info=True)
        writer.finish(choose_index_type(n, dim, budget), budget)
    return time.perf_counter() - started, np.concatenate(everything)


def add_ten(directory: Path, identity: IndexIdentity, dim: int, round_: int) -> float:
    vectors = synthetic(10, seed=10**9 + round_, dim=dim)
    started = time.perf_counter()
    with IndexWriter.open(directory, identity) as writer:
        writer.commit(rows_for(vectors, 0, folder=f"/new{round_}"))
        writer.finish()
    return time.perf_counter() - started


COLD_QUERY = """
import sys, time, numpy as np
started = time.perf_counter()
from bt_search.store import IndexReader
imported = time.perf_counter()
reader = IndexReader.open(sys.argv[1])
queries = np.load(sys.argv[2])
_, ids = reader.search(queries, 50)
paths = reader.paths_for(ids[0])
done = time.perf_counter()
# VmHWM, not ru_maxrss: ru_maxrss survives exec and would count the benchmark parent's memory at fork.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(done - imported, peak_kb / 1024, imported - started)
"""


def cold_query(directory: Path, queries: np.ndarray) -> tuple[float, float, float]:
    """(open + search + paths seconds, peak RSS MB, import seconds) in a fresh process."""
    with tempfile.NamedTemporaryFile(suffix=".npy") as handle:
        np.save(handle.name, queries[:1])
        out = subprocess.run(
            [sys.executable, "-c", COLD_QUERY, str(directory), handle.name],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        ).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def recall(directory: Path, embeddings: np.ndarray, queries: np.ndarray) -> float:
    reader = IndexReader.open(directory)
    _, got = reader.search(queries, K)
    truth = np.argpartition(-(queries @ embeddings.T), K, axis=1)[:, :K]  # row ids = positions (written in order)
    return float(np.mean([len(set(g) & set(t)) / K for g, t in zip(got.tolist(), truth.tolist())]))


def cli_index_seconds(directory: Path, photos: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bt_search", "index", str(photos), "--index", str(directory), "-q", "--workers", "0"],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--budget", default=None, help="ANN memory budget, e.g. 100MB (default: bt-search's, 1GiB)")
    args = parser.parse_args()
    budget = parse_bytes(args.budget) if args.budget else None
    identity = IndexIdentity("synthetic/512", None, DIM, {})
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results = []
    print(
        f"{'N':>9} {'type':>8} {'build s':>8} {'add-10 s':>9} {'cold open+search s':>19} {'RSS MB':>7} "
        f"{'image R@50':>10} {'gap R@50':>9}  tuned at build (recall@50 on held-out queries)",
        flush=True,
    )
    try:
        for n in args.sizes:
            directory = work / f"idx-{n}"
            build_s, embeddings = build(directory, identity, n, DIM, budget)
            image_q = synthetic(args.queries, seed=4242)
            gap_q = gap_queries(args.queries, seed=4343)
            image_r, gap_r = recall(directory, embeddings, image_q), recall(directory, embeddings, gap_q)
            add_s = float(np.median([add_ten(directory, identity, DIM, r) for r in range(3)]))
            cold_s, rss, _ = cold_query(directory, gap_q)
            manifest = json.loads((directory / "manifest.json").read_text())
            index_type, tuned = manifest["index_type"], tuning(manifest["ann"])
            results.append(
                {
                    "n": n,
                    "type": index_type,
                    "build_s": build_s,
                    "add10_s": add_s,
                    "cold_s": cold_s,
                    "rss_mb": rss,
                    "image_recall": image_r,
                    "gap_recall": gap_r,
                    "tuned": tuned,
                }
            )
            print(
                f"{n:>9} {index_type:>8} {build_s:8.1f} {add_s:9.3f} {cold_s:19.3f} {rss:7.0f} {image_r:10.3f} "
                f"{gap_r:9.3f}  {tuned}",
                flush=True,
            )
            shutil.rmtree(directory)
        cli = cli_ratio(work, max(args.sizes))
        print(
            f"bt-search index NEW_FOLDER (10 photos, demo model): {cli[0]:.2f} s on 1k, "
            f"{cli[1]:.2f} s on {max(args.sizes)}: "
            f"ratio {cli[1] / cli[0]:.2f}x",
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": results, "cli": cli}, indent=1))
    if args.plot:
        plot(results, args.plot)


def tuning(entry: dict) -> str:
    params = {
        key: value for key, value in entry["params"].items() if value and not (key == "refine_factor" and value == 1)
    }
    recall = entry.get("recall")
    return f"{params or 'exact'}" + (f", {recall['measured']:.3f}" if recall else "")


def cli_ratio(work: Path, big: int) -> tuple[float, float]:
    """A whole `bt-search index NEW_FOLDER` for 10 photos into a 1k and a `big` index (demo model's identity)."""
    from bt_search.engine.loading import load_engine
    from bt_search.store import IndexIdentity

    engine = load_engine(str(ROOT / "sample_data" / "demo-model"), device="cpu")
    identity = IndexIdentity.of(engine)
    times = []
    for n in (1000, big):
        directory = work / f"cli-{n}"
        build(directory, identity, n, identity.embedding_dim, None)
        photos = work / f"photos-{n}"
        photos.mkdir()
        for i, source in enumerate(sorted((ROOT / "sample_data" / "images").glob("img_*"))[:10]):
            shutil.copy(source, photos / f"new{i}{source.suffix}")
        times.append(cli_index_seconds(directory, photos))
        shutil.rmtree(directory)
    return times[0], times[1]


def plot(results: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["n"] for r in results]
    figure, axis = plt.subplots(figsize=(6, 4))
    for key, label in (
        ("add10_s", "add 10 images (commit + finish)"),
        ("cold_s", "cold open + search"),
        ("build_s", "build"),
    ):
        axis.loglog(sizes, [r[key] for r in results], marker="o", label=label)
    axis.set_xlabel("images in the index (512-d)")
    axis.set_ylabel("seconds")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=110)


if __name__ == "__main__":
    main()
