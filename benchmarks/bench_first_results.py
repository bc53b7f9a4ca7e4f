"""Time to first results: when the cosine shortlist is shown against when the reranked answer is, cold (a fresh
process searching in-process, as `query --no-server` does: imports, model and index load, text tower, shortlist,
then the rerank) and warm (through `bt-search serve`, `/api/query` streamed as NDJSON: the first line against
the last). The server runs with `--state-cache-mb 0`, so every warm query computes its candidates' vision states
(the uncached case); each query is a different caption, so no answer comes from the result cache.

    python benchmarks/bench_first_results.py --shortlist 20                    # the demo model, sample images
    python benchmarks/bench_first_results.py --shortlist 8 --model base        # base-shaped random checkpoint
    python benchmarks/bench_first_results.py --shortlist 8 --model large --photos 40 --precision int8

`--precision` is passed to the cold search and to the server (`auto` by default). To emulate a CPU without
AVX512/AMX, run it under the kernel caps of bench_rerank_precision.py (the child processes inherit them).

Cold times are for the library in a fresh interpreter (the CLI adds its own imports, ~0.3 s, before it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
QUERIES = [
    "a red circle left of a blue square",
    "two green triangles",
    "a yellow star above a purple cross",
    "three blue squares",
    "a purple triangle below a red circle",
]
COLD = """
import json, sys, time
from bt_search.search.open import open_searcher
from bt_search.search.query import QueryRequest, run_query
index, model, query, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
first = []
searcher = open_searcher(index, model if model != "-" else None, device="cpu", precision=sys.argv[5])
run_query(searcher, QueryRequest(queries=(query,), **options),
          on_update=lambda results: first or first.append(time.time()))
print(json.dumps({"first": first[0], "end": time.time()}))
"""


def index_for(model: str, root: Path, photo_count: int) -> tuple[Path, str]:
    from bt_search.engine.loading import load_engine
    from bt_search.indexing.run import index_paths
    from bt_search.store import IndexIdentity, IndexWriter

    if model == "demo":
        checkpoint, photos = str(REPO / "sample_data" / "demo-model"), REPO / "sample_data" / "images"
    else:
        from bench_index import write_photos
        from common import shaped_checkpoint

        checkpoint, photos = str(shaped_checkpoint(model)), root / "photos"
        write_photos(photos, photo_count)
    engine = load_engine(checkpoint, device="cpu", precision="fp32")
    with IndexWriter.open(root / "index", IndexIdentity.of(engine)) as writer:
        index_paths([str(photos)], writer, engine, workers=0, batch_size=16)
    return root / "index", checkpoint


def cold(index: Path, checkpoint: str, query: str, options: dict, precision: str) -> tuple[float, float]:
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-c", COLD, str(index), checkpoint, query, json.dumps(options), precision],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    ).stdout
    times = json.loads(out.strip().splitlines()[-1])
    return times["first"] - started, times["end"] - started


def warm(port: int, query: str, options: dict) -> tuple[float, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    body = json.dumps({"queries": [query], "options": options})
    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Accept": "application/x-ndjson"}
    connection.request("POST", "/api/query", body, headers)
    response = connection.getresponse()
    first = None
    while response.readline():
        if first is None:
            first = time.perf_counter() - started
    end = time.perf_counter() - started
    connection.close()
    return first, end


def serve(index: Path, runtime: Path, precision: str) -> tuple[subprocess.Popen, int]:
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), PYTHONPATH=str(REPO))
    uncached = ("--state-cache-mb", "0", "--precision", precision)
    process = subprocess.Popen(
        [sys.executable, "-m", "bt_search", "serve", "--index", str(index), "--port", "0", *uncached],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for record in (runtime / "bt-search").glob("server-*.json"):
            data = json.loads(record.read_text())
            if data["pid"] == process.pid:
                return process, int(data["url"].rsplit(":", 1)[1])
        time.sleep(0.2)
    process.kill()
    raise TimeoutError("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("demo", "base", "large"), default="demo")
    parser.add_argument("--photos", type=int, default=60, help="random photos to index (base and large)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--shortlist", type=int, default=20)
    parser.add_argument("--cold-runs", type=int, default=2)
    parser.add_argument("--cold-only", action="store_true", help="skip the warm (served) runs")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-first-"))
    index, checkpoint = index_for(args.model, root, args.photos)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"model {args.model}, shortlist {args.shortlist}, precision {args.precision}, CPU, load average {load}; "
        "median seconds (first results / reranked answer)"
    )
    # A random checkpoint sees every photo as a copy of every other (cosine ~0.99): folding would fold the
    # shortlist away and widen it, so those search unfolded. top_k no larger than the shortlist keeps it as asked.
    options = {"shortlist": args.shortlist, "top_k": min(10, args.shortlist), "fold": args.model == "demo"}
    runs = [cold(index, checkpoint, QUERIES[i % len(QUERIES)], options, args.precision) for i in range(args.cold_runs)]
    print(
        f"cold, in-process:  first {statistics.median(r[0] for r in runs):7.2f}  "
        f"answer {statistics.median(r[1] for r in runs):7.2f}  ({len(runs)} runs)"
    )
    if args.cold_only:
        return
    process, port = serve(index, root / "run", args.precision)
    try:
        warm(port, "warm-up query", options)
        runs = [warm(port, query, options) for query in QUERIES]
    finally:
        process.terminate()
        process.wait(30)
    print(
        f"warm, serve stream: first {statistics.median(r[0] for r in runs):7.3f}  "
        f"answer {statistics.median(r[1] for r in runs):7.3f}  ({len(runs)} queries); load average after "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )


if __name__ == "__main__":
    sys.exit(main())
