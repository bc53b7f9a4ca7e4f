"""`bt-search query` wall time, warm (auto-attached to `bt-search serve`) against cold (in-process), in one run.

Every timing is a fresh `bt-search query` process, as a user or a script runs it; the base-shaped random
checkpoint of benchmarks/common.py, on CPU. Rows:
  --no-rerank               a query the server has not seen (no result cache), cosine only
  rerank N                  a first rerank query: every candidate's vision states computed
  cached candidates         a second, different rerank query whose candidates' states are all in the state
                            cache (the index holds N images, so every shortlist is the whole collection)
  identical repeat          the same query again: the result cache
Warm rows are the best of --repeat runs (no-rerank: a different query each run, so none is a repeat).

    python benchmarks/bench_serve.py --shortlist 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import write_photos  # noqa: E402
from common import base_shaped_checkpoint  # noqa: E402

from bt_search.serve.client import ServerClient  # noqa: E402

QUERIES = ["a photo of two cats sleeping on a couch", "a red circle left of a blue square", "people walking on a beach",
           "a bowl of fruit on a wooden table", "a dog catching a frisbee", "a city street at night"]  # fmt: skip


def cli(env: dict, *args: str) -> tuple[float, str, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bt_search", *args], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout, done.stderr


def start_server(env: dict, index: Path, runtime: Path) -> tuple[subprocess.Popen, float]:
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "bt_search", "serve", "--index", str(index), "--port", "0", "--device", "cpu", "--quiet"], env=env
    )
    while not list((runtime / "bt-search").glob("server-*.json")):
        if server.poll() is not None:
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    return server, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shortlist", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.shortlist

    checkpoint = base_shaped_checkpoint()
    work = Path(tempfile.mkdtemp(prefix="bt-bench-serve-"))
    runtime = work / "run"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), BT_SEARCH_DEVICE="cpu")
    write_photos(work / "photos", n)
    index = work / "index"
    cli(env, "index", str(work / "photos"), "--index", str(index), "--model", str(checkpoint), "--quiet")
    base = ["query", "--index", str(index), "-k", "10"]
    rerank = [*base, "--shortlist", str(n)]

    cold_plain, plain_out, _ = cli(env, *base, QUERIES[0], "--no-rerank", "--no-server")
    cold_rerank, rerank_out, _ = cli(env, *rerank, QUERIES[1], "--no-server")
    server, startup = start_server(env, index, runtime)
    try:
        warm_plain = []
        for i in range(args.repeat):
            seconds, out, err = cli(env, *base, QUERIES[i], "--no-rerank")
            assert "server not used" not in err, err
            warm_plain.append(seconds)
            if i == 0:
                assert out == plain_out, "served output differs from in-process"
        first, out, _ = cli(env, *rerank, QUERIES[1])
        assert out == rerank_out, "served rerank output differs from in-process"
        cached = min(cli(env, *rerank, QUERIES[3 + i])[0] for i in range(args.repeat))
        repeat = min(cli(env, *rerank, QUERIES[3])[0] for _ in range(args.repeat))
        advert = json.loads(next((runtime / "bt-search").glob("server-*.json")).read_text())
        health = ServerClient(advert["url"]).health()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()

    best_plain = min(warm_plain)
    print(f"base-shaped random checkpoint, CPU, {n} images, N={n}, threads={os.cpu_count()}; server start {startup:.1f} s; "
          f"state cache {health.get('state_cache', {}).get('entries', '?')} entries")  # fmt: skip
    print(f"{'case':<34}{'cold (in-process)':>18}{'warm (server)':>15}{'ratio':>9}")
    print(f"{'--no-rerank':<34}{cold_plain:>16.2f} s{best_plain:>13.2f} s{cold_plain / best_plain:>8.1f}x")
    print(f"{f'rerank N={n}, first':<34}{cold_rerank:>16.2f} s{first:>13.2f} s{cold_rerank / first:>8.1f}x")
    print(f"{'2nd query, candidates cached':<34}{cold_rerank:>16.2f} s{cached:>13.2f} s{cold_rerank / cached:>8.1f}x"
          f"   vs its first run: {first / cached:.1f}x")  # fmt: skip
    print(f"{'identical repeat':<34}{cold_rerank:>16.2f} s{repeat:>13.2f} s{cold_rerank / repeat:>8.1f}x")


if __name__ == "__main__":
    main()
