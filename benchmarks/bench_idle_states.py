"""How often a new query's candidates are already in the server's state cache, with and without idle-time
states (`serve --idle-states`, bt_search/serve/idle.py), on a query log that repeats themes: the captions of
sample_data/images/captions.csv in a random order, the demo model, the sample images.

For each query, in turn: the hit rate is the share of the candidates it reranks (its cosine shortlist) whose
vision states are cached before it runs. "without": the cache holds what earlier queries reranked. "with":
after each query the server is idle and computes states for the candidates it shortlisted-but-did-not-rerank
(`--lookahead` past its shortlist), up to `--idle-images` per gap (all: an idle gap long enough for all of
them). The same Service code the server runs; the gaps are simulated (no HTTP), so the numbers count states,
not seconds (the time an idle gap needs is `--lookahead` x one image's vision tower).

    python benchmarks/bench_idle_states.py --queries 80 --shortlist 20
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_index(target: Path, model: Path) -> Path:
    from bt_search.engine.loading import load_engine
    from bt_search.indexing.run import index_paths
    from bt_search.store import IndexIdentity, IndexWriter

    engine = load_engine(str(model), device="cpu", precision="fp32")
    with IndexWriter.open(target, IndexIdentity.of(engine)) as writer:
        index_paths([str(REPO / "sample_data" / "images")], writer, engine, workers=0, batch_size=16)
    return target


def run(index: Path, model: Path, queries: list[str], shortlist: int, idle: bool, lookahead: int, per_gap: int | None):
    from bt_search.serve.idle import IdleStates
    from bt_search.serve.service import Service

    service = Service.load(index, str(model), device="cpu", precision="fp32", state_cache_mb=1024, batch_size=16)
    worker = IdleStates(service, idle_seconds=lambda: 1.0, settle_s=0.0)
    if idle:
        service.on_unreranked, service.lookahead = worker.offer, lookahead
    hits = total = 0
    rates = []
    started = time.perf_counter()
    for query in queries:
        options = {"top_k": 10, "shortlist": shortlist}
        # the candidates this query will rerank: its cosine shortlist (a cosine-only search touches no state)
        candidates = service.search([query], {**options, "rerank": False, "top_k": shortlist}).results[0]
        cached = sum((service.reader.state_id, h.path) in service.states for h in candidates)
        hits, total = hits + cached, total + len(candidates)
        rates.append(cached / max(1, len(candidates)))
        service.search([query], options)
        if idle:
            for _ in range(per_gap if per_gap is not None else 1 << 30):
                if not worker.pending or not worker.step():
                    break
            worker.pending.clear()  # what a gap did not reach is dropped: the next query's come first anyway
    seconds = time.perf_counter() - started
    return hits / max(1, total), rates, worker.computed, len(service.states), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=80, help="queries in the log (captions, random order)")
    parser.add_argument("--shortlist", type=int, default=20, help="candidates each query reranks (CPU default)")
    parser.add_argument("--lookahead", type=int, default=None, help="candidates past the shortlist (default: its size)")
    parser.add_argument("--idle-images", type=int, default=None, help="states an idle gap computes (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=Path, default=None, help="an index of sample_data/images (built if absent)")
    args = parser.parse_args()
    model = REPO / "sample_data" / "demo-model"
    with open(REPO / "sample_data" / "images" / "captions.csv", newline="") as handle:
        captions = [row["caption"] for row in csv.DictReader(handle)]
    random.Random(args.seed).shuffle(captions)
    queries = captions[: args.queries]
    index = args.index or Path(tempfile.mkdtemp(prefix="bench-idle-")) / "index"
    if not (index / "manifest.json").exists() and not any(index.glob("manifest*")):
        build_index(index, model)
    lookahead = args.lookahead or args.shortlist
    print(f"{len(queries)} queries (captions, seed {args.seed}), shortlist {args.shortlist}, demo model, CPU")
    for idle in (False, True):
        rate, rates, computed, cached, seconds = run(
            index, model, queries, args.shortlist, idle, lookahead, args.idle_images
        )
        later = sum(rates[len(rates) // 2 :]) / max(1, len(rates) - len(rates) // 2)
        label = f"with idle states (lookahead {lookahead}, {args.idle_images or 'all'} per gap)" if idle else "without"
        print(
            f"{label:<48} hit rate {rate:6.1%}  (second half of the log {later:6.1%});"
            f" idle states computed {computed}, states cached at the end {cached}; {seconds:.1f} s"
        )


if __name__ == "__main__":
    sys.exit(main())
