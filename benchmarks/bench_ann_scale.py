"""ANN indexes at 10k-1M synthetic 512-d embeddings: build, add 10, file size, cold open + search, recall@50.

For each N the memory budget picks a kind (bt_search.store.ann.faiss_index.plan_index); affordable alternatives run too.
Tuning uses `probe_queries` from a sample (what the store can do at build time, knowing no text queries);
recall@50 against exact search is then measured on image-like and on gap-shifted (text-like) queries.
The cold open + one search runs in a fresh subprocess (FAISS file memory-mapped; the OS page cache may be
warm), which reports wall time and peak RSS above a bare `import faiss`.

    python benchmarks/bench_ann_scale.py --sizes 10000 100000 1000000 --plot docs/ann_scale.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bt_search.store.ann import faiss_index
from bt_search.store.ann.tuning import exact_search, probe_queries, recall_at_k, tune_search
from tests.support.ann_data import (
    clustered_image_vectors,
    gap_shifted_queries,
    image_like_queries,
)

DIM, K, CHUNK = 512, 50, 50_000
COLD_QUERY = """
import json, sys, time
import numpy as np
import faiss
def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
base = status("VmRSS:")
from bt_search.store.ann import faiss_index
path, vectors_path, params, k = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
started = time.perf_counter()
index = faiss_index.read_index(path, mmap=True)
vectors = np.load(vectors_path, mmap_mode="r")
query = np.asarray(vectors[:1]) * 0.9 + 0.1
query /= np.linalg.norm(query)
exact = None
if params["refine_factor"] > 1:
    exact = lambda ids: np.asarray(vectors[np.sort(ids)])[np.argsort(np.argsort(ids))]  # noqa: E731
faiss_index.search(index, query, k, params=faiss_index.SearchParams.from_dict(params), exact_vectors=exact)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rss_mb": (status("VmHWM:") - base) / 1024}))
"""


def kinds_for(n: int, budget: int) -> list[str]:
    chosen = faiss_index.plan_index(n, DIM, budget).kind
    alternatives = ["flat", "ivf_flat", "ivf_pq"] + (["hnsw"] if n <= 20_000 else [])  # HNSW builds slowly
    return [chosen] + [kind for kind in alternatives if kind != chosen]


def measure(
    kind: str,
    vectors: np.ndarray,
    vectors_path: Path,
    queries: dict,
    truth: dict,
    workdir: Path,
) -> dict:
    n = len(vectors)
    ids = np.arange(n, dtype=np.int64)
    plan = faiss_index.plan_index(n, DIM, kind=kind)
    rng = np.random.default_rng(1)
    sample = vectors[np.sort(rng.choice(n, size=plan.train_size, replace=False))] if plan.train_size else None
    started = time.perf_counter()
    index = faiss_index.build_index(
        plan,
        sample,
        ((ids[i : i + CHUNK], vectors[i : i + CHUNK]) for i in range(0, n, CHUNK)),
    )
    build_s = time.perf_counter() - started
    path = workdir / f"{kind}-{n}.faiss"
    faiss_index.write_index(index, path)

    exact = (lambda wanted: vectors[wanted]) if kind == "ivf_pq" else None
    probe_sample = vectors[rng.choice(n, size=min(n, 20_000), replace=False)]
    probes = probe_queries(probe_sample, 200, rng)
    probe_truth = exact_search(
        probes,
        ((ids[i : i + CHUNK], vectors[i : i + CHUNK]) for i in range(0, n, CHUNK)),
        K,
    )[1]
    params, tuned_recall = tune_search(index, probes, probe_truth, k=K, exact_vectors=exact)
    recalls = {
        name: recall_at_k(faiss_index.search(index, q, K, params=params, exact_vectors=exact)[1], truth[name])
        for name, q in queries.items()
    }

    new = clustered_image_vectors(10, DIM, np.random.default_rng(5))
    started = time.perf_counter()  # what an incremental run does: read, add, atomic rewrite
    grown = faiss_index.read_index(path, mmap=False)
    faiss_index.add_vectors(grown, new, np.arange(n, n + 10, dtype=np.int64))
    faiss_index.write_index(grown, workdir / "grown.faiss")
    add_s = time.perf_counter() - started
    del grown, index

    cold = subprocess.run(
        [sys.executable, "-c", COLD_QUERY, str(path), str(vectors_path), json.dumps(params.to_dict()), str(K)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    cold_result = json.loads(cold.stdout)
    return {
        "n": n,
        "kind": kind,
        "factory": plan.factory,
        "build_s": build_s,
        "add10_s": add_s,
        "file_mb": path.stat().st_size / 1e6,
        "cold_s": cold_result["seconds"],
        "rss_mb": cold_result["rss_mb"],
        "params": params.to_dict(),
        "tuned_recall": tuned_recall,
        "recall_image": recalls["image"],
        "recall_gap": recalls["gap"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--budget", default=str(faiss_index.DEFAULT_MEMORY_BUDGET))
    parser.add_argument(
        "--kinds",
        nargs="*",
        help="only these kinds (default: the budget's pick + alternatives)",
    )
    parser.add_argument("--json", type=Path, default=ROOT / ".bench" / "ann_scale.json")
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    budget = faiss_index.parse_bytes(args.budget)
    results = json.loads(args.json.read_text()) if args.json.is_file() else []
    print(
        f"{'N':>9} {'kind':8} {'build s':>8} {'add10 s':>8} {'file MB':>8} {'cold s':>7} {'RSS MB':>7} "
        f"{'params':>26} {'R@50 img':>8} {'R@50 gap':>8}"
    )
    for n in args.sizes:
        rng = np.random.default_rng(n)
        with tempfile.TemporaryDirectory(dir=ROOT / ".bench") as tmp:
            workdir = Path(tmp)
            vectors = clustered_image_vectors(n, DIM, rng)
            np.save(workdir / "vectors.npy", vectors)
            queries = {
                "image": image_like_queries(vectors, args.queries, rng),
                "gap": gap_shifted_queries(vectors, args.queries, rng),
            }
            ids = np.arange(n, dtype=np.int64)
            truth = {
                name: exact_search(q, ((ids[i : i + CHUNK], vectors[i : i + CHUNK]) for i in range(0, n, CHUNK)), K)[1]
                for name, q in queries.items()
            }
            for kind in args.kinds or kinds_for(n, budget):
                row = measure(kind, vectors, workdir / "vectors.npy", queries, truth, workdir)
                row["chosen"] = kind == faiss_index.plan_index(n, DIM, budget).kind
                results = [r for r in results if (r["n"], r["kind"]) != (n, kind)] + [row]
                args.json.write_text(json.dumps(results, indent=1))
                params = ",".join(f"{key}={value}" for key, value in row["params"].items() if value and value != 1)
                print(
                    f"{n:9d} {kind + ('*' if row['chosen'] else ''):8} {row['build_s']:8.1f} {row['add10_s']:8.2f} "
                    f"{row['file_mb']:8.1f} {row['cold_s']:7.3f} {row['rss_mb']:7.0f} {params or '-':>26} "
                    f"{row['recall_image']:8.3f} {row['recall_gap']:8.3f}",
                    flush=True,
                )
    if args.plot:
        plot(results, args.plot)


def plot(results: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("build_s", "build (s)"),
        ("add10_s", "add 10 vectors (s)"),
        ("cold_s", "cold open + search (s)"),
        ("rss_mb", "query peak RSS (MB)"),
        ("recall_gap", "recall@50, gap-shifted"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for axis, (key, label) in zip(axes, panels):
        for kind in sorted({r["kind"] for r in results}):
            rows = sorted((r for r in results if r["kind"] == kind and r[key] > 0), key=lambda r: r["n"])
            axis.plot([r["n"] for r in rows], [r[key] for r in rows], marker="o", label=kind)
        axis.set_xscale("log")
        if key != "recall_gap":
            axis.set_yscale("log")
        axis.set_xlabel("vectors (512-d)")
        axis.set_title(label)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(target, dpi=110)


if __name__ == "__main__":
    main()
