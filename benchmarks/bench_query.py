"""Rerank latency: bt-search at fp32 and at its default precision against the HF-docs loop at fp32, side by side.

HF-docs loop (what a user would write): for each query, `BridgeTowerProcessor` +
`BridgeTowerForImageAndTextRetrieval` in fp32 over its N shortlisted (query, image) pairs (batched per query,
images decoded from disk), score = softmax(logits)[:, 1]. bt-search: `Searcher.search` with rerank (text
tower once per query, vision tower once per distinct candidate, fusion-only ITM per pair), once with an
fp32 engine and once with `--precision auto`, the default (on a CPU with AVX512-BF16 or AMX: fp32
embeddings, bf16 rerank; elsewhere an int8 rerank over fp32 embeddings), and `bf16` or `int8` on request.
Same base-shaped random checkpoint, same index. Cases: one query at each --shortlists N, and a batch of
--queries queries at --batch-shortlist. Each case runs once per contender, the contenders back to back, so
machine load hits all of them alike. Also prints how far the
ITM scores are from HF's (max |delta| over the pairs both scored), and optionally (--cold) cold starts.

    python benchmarks/bench_query.py --images 60 --shortlists 20 50 --queries 10 --batch-shortlist 20
    python benchmarks/bench_query.py --images 24 --shortlists 20 --queries 3    # a quick look

`--cold-before REV` measures only the cold `query --no-rerank` (a fresh process: imports, text tower, index,
one query), of this checkout and of git revision REV side by side, alternating, on the demo model (index of
sample_data/images) and on random checkpoints of the default model's shapes (`large`) or base shapes:

    python benchmarks/bench_query.py --cold-before 5fb9691 --cold-models demo large --repeat 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import write_photos  # noqa: E402
from common import base_shaped_checkpoint, shaped_checkpoint, timed  # noqa: E402

from bt_search.engine.loading import load_engine  # noqa: E402
from bt_search.indexing.run import index_paths  # noqa: E402
from bt_search.search.searcher import Searcher  # noqa: E402
from bt_search.store import IndexIdentity, IndexReader, IndexWriter  # noqa: E402

QUERIES = [
    "a photo of two cats sleeping on a couch",
    "a red circle left of a blue square",
    "people walking on a beach",
    "a bowl of fruit on a wooden table",
    "a dog catching a frisbee",
    "a city street at night",
    "a plate of pasta",
    "mountains under a cloudy sky",
    "a child riding a bicycle",
    "a bird on a branch",
]


def cold_start(index_dir: Path, extra: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bt_search", "query", QUERIES[0], "--index", str(index_dir), "--device", "cpu", *extra],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / "sample_data" / "demo-model"


def cold_query_in(tree: Path, index_dir: Path) -> float:
    """Seconds of one cold `query --no-rerank` run by the checkout at `tree` (no server, CPU)."""
    command = [sys.executable, "-m", "bt_search", "query", QUERIES[1], "--index", str(index_dir), "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(tree))
    start = time.perf_counter()
    subprocess.run([*command, "--no-rerank", "--no-server"], check=True, capture_output=True, cwd=tree, env=env)
    return time.perf_counter() - start


def cold_comparison(before: str, models: list[str], repeat: int) -> None:
    """Cold `query --no-rerank` of REV and of this checkout, alternating, median of `repeat` each."""
    import statistics

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bt-bench-cold-"))
    old_tree = work / "before"
    old_tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", before], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
    rows = []
    for name in models:
        checkpoint = DEMO_MODEL if name == "demo" else shaped_checkpoint(name)
        photos = REPO / "sample_data" / "images" if name == "demo" else work / "photos"
        if name != "demo" and not photos.is_dir():
            write_photos(photos, 4)
        index_dir = work / f"index-{name}"
        print(f"indexing for {name} ...", file=sys.stderr, flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bt_search",
                "index",
                str(photos),
                "--index",
                str(index_dir),
                "--model",
                str(checkpoint),
                "-q",
            ],
            check=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(repeat):
            times["before"].append(cold_query_in(old_tree, index_dir))
            times["after"].append(cold_query_in(REPO, index_dir))
        rows.append((name, statistics.median(times["before"]), statistics.median(times["after"]), times))
    print(
        f"cold `query --no-rerank` (fresh process, CPU), median of {repeat}, before = {before}, after = this checkout"
    )
    print(f"load average before/after: {_load(load_before)} / {_load(os.getloadavg())}, cores: {os.cpu_count()}")
    print(f"{'model':<8} {'before':>9} {'after':>9} {'after/before':>13}   all runs (before | after)")
    for name, old, new, times in rows:
        runs = " ".join(f"{t:.2f}" for t in times["before"]) + " | " + " ".join(f"{t:.2f}" for t in times["after"])
        print(f"{name:<8} {old:>7.2f} s {new:>7.2f} s {new / old:>12.2f}x   {runs}")
    shutil.rmtree(work, ignore_errors=True)


def clocked(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def max_deviation(ours: dict, reference: dict) -> tuple[float, int]:
    shared = ours.keys() & reference.keys()
    return (max(abs(ours[k] - reference[k]) for k in shared) if shared else float("nan")), len(shared)


def _load(averages) -> str:
    return " ".join(f"{x:.2f}" for x in averages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60, help="photos in the index (at least the largest N)")
    parser.add_argument("--shortlists", type=int, nargs="+", default=[20, 50], help="N for the single-query cases")
    parser.add_argument("--queries", type=int, default=10, help="queries in the batch case (0: skip it)")
    parser.add_argument("--batch-shortlist", type=int, default=20, help="N for the batch case")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "auto"], choices=["fp32", "auto", "bf16", "int8"])
    parser.add_argument("--cold", action="store_true", help="also time cold starts (fresh processes)")
    parser.add_argument("--cold-before", metavar="REV", help="only: cold --no-rerank of git REV vs this checkout")
    parser.add_argument("--cold-models", nargs="+", default=["demo", "large"], choices=["demo", "base", "large"])
    parser.add_argument("--repeat", type=int, default=3, help="cold runs per side (--cold-before)")
    args = parser.parse_args()
    if args.cold_before:
        cold_comparison(args.cold_before, args.cold_models, args.repeat)
        return
    load_before = os.getloadavg()

    from PIL import Image
    from transformers import BridgeTowerForImageAndTextRetrieval, BridgeTowerProcessor

    checkpoint = base_shaped_checkpoint()
    work = Path(tempfile.mkdtemp(prefix="bt-bench-q-"))
    write_photos(work / "photos", args.images)
    engine = load_engine(str(checkpoint), device="cpu", precision="fp32")
    with IndexWriter.open(work / "index", IndexIdentity.of(engine)) as writer:
        index_paths([str(work / "photos")], writer, engine, batch_size=8, workers=1)
    reader = IndexReader.open(work / "index")
    engines = {
        p: engine if p == "fp32" else load_engine(str(checkpoint), device="cpu", precision=p) for p in args.precisions
    }
    searchers = {p: Searcher(reader, e, batch_size=8) for p, e in engines.items()}
    processor = BridgeTowerProcessor.from_pretrained(str(checkpoint))
    retrieval = BridgeTowerForImageAndTextRetrieval.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    hf_scores: dict[tuple[str, str], float] = {}
    our_scores: dict[str, dict[tuple[str, str], float]] = {p: {} for p in args.precisions}

    @torch.inference_mode()
    def hf_docs(batch: list[str], n: int) -> None:
        shortlists = reader.search(engine.encode_texts(batch), n)[1]
        for query, rows in zip(batch, shortlists):
            paths = reader.paths_for(rows)
            images = [Image.open(path).convert("RGB") for path in paths]
            inputs = processor(images=images, text=[query] * len(images), padding=True, return_tensors="pt")
            scores = torch.softmax(retrieval(**inputs).logits.float(), dim=-1)[:, 1]
            hf_scores.update({(query, path): float(s) for path, s in zip(paths, scores)})

    def ours(precision: str, batch: list[str], n: int) -> None:
        for hits in searchers[precision].search(batch, top_k=n, shortlist=n, score="itm"):
            our_scores[precision].update({(h.query, h.path): h.score for h in hits})

    cases = [(f"rerank N={n}, 1 query", QUERIES[:1], n) for n in args.shortlists]
    if args.queries:
        batch = QUERIES[: args.queries]
        shortlists = reader.search(engine.encode_texts(batch), args.batch_shortlist)[1]
        distinct = len({int(r) for rows in shortlists for r in rows})
        label = (
            f"rerank N={args.batch_shortlist}, batch of {len(batch)} "
            f"({distinct} distinct of {shortlists.size} pairs), per query"
        )
        cases.append((label, batch, args.batch_shortlist))
    hf_docs(QUERIES[:1], 1)  # warm-up: first calls pay one-off set-up
    for precision in args.precisions:
        ours(precision, QUERIES[:1], 1)
    t_plain = timed(lambda: searchers[args.precisions[0]].search(QUERIES[:1], top_k=10, rerank=False), repeat=3)
    rows = []
    for label, batch, n in cases:
        print(f"measuring {label} ...", file=sys.stderr, flush=True)
        hf = clocked(partial(hf_docs, batch, n))[0] / len(batch)
        rows.append((label, hf, {p: clocked(partial(ours, p, batch, n))[0] / len(batch) for p in args.precisions}))

    print(
        f"base-shaped random checkpoint, CPU, threads={torch.get_num_threads()}, images={args.images}, "
        f"load average before/after: {_load(load_before)} / {_load(os.getloadavg())}"
    )
    for p, e in engines.items():
        print(
            f"bt {p}: embeddings {str(e.dtype).removeprefix('torch.')}, "
            f"rerank {str(e.rerank_dtype).removeprefix('torch.')}"
        )
    header = f"{'case':<72} {'hf-docs fp32':>12}" + "".join(f" {'bt ' + p:>9} {'speed-up':>8}" for p in args.precisions)
    print(header)
    for label, hf, by_precision in rows:
        print(f"{label:<72} {hf:>10.2f} s" + "".join(f" {t:>7.2f} s {hf / t:>7.2f}x" for t in by_precision.values()))
    print(f"no-rerank, 1 query ({args.precisions[0]}): {t_plain * 1000:.1f} ms")
    for p in args.precisions:
        deviation, count = max_deviation(our_scores[p], hf_scores)
        print(
            f"max |ITM bt-search {p} - HF fp32| = {deviation:.2e} over {count} shared pairs "
            "(bt-search draft-decodes candidate JPEGs: within 0.01 by design, docs/performance.md)"
        )
    if args.cold:
        cold_plain = cold_start(work / "index", ["--no-rerank"])
        cold_rerank = cold_start(work / "index", ["--shortlist", str(args.shortlists[0])])
        print(
            f"cold start (fresh process, load + 1 query): --no-rerank {cold_plain:.1f} s, "
            f"rerank N={args.shortlists[0]} {cold_rerank:.1f} s"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
