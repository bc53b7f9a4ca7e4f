"""`bt-search query` wall time, warm (auto-attached to `bt-search serve`) against cold (in-process), in one run.

Every timing is a fresh `bt-search query` process, as a user or a script runs it; the base-shaped random
checkpoint of benchmarks/common.py, on CPU. Rows:
  --no-rerank               a query the server has not seen (no result cache), cosine only
  rerank N                  a first rerank query: every candidate's vision states computed
  cached candidates         a second, different rerank query whose candidates' states are all in the state
                            cache (the index holds N images, so every shortlist is the whole collection)
  identical repeat          the same query again: the result cache
  --no-rerank, full typer CLI the same kind of query entering through cli.py's typer app, as every query did
                            before the light attach path (cli/launcher.py -> cli/attach.py): its cost is the
                            imports of typer, pydantic and rich
Warm rows are the best of --repeat runs (no-rerank: a different query each run, so none is a repeat).
Besides wall time it prints CPU seconds (the query process's, plus the server's during a warm query): on a
shared, oversubscribed machine wall time measures the neighbours, CPU time still measures the work.

    python benchmarks/bench_serve.py --shortlist 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

QUERIES = [
    "a photo of two cats sleeping on a couch",
    "a red circle left of a blue square",
    "people walking on a beach",
    "a bowl of fruit on a wooden table",
    "a dog catching a frisbee",
    "a city street at night",
]


SERVER_PID: list[int] = []  # the running server, whose CPU time a warm query also spends


def cpu_seconds() -> float:
    """CPU time of finished child processes plus the running server's so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    for pid in SERVER_PID:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


CPU: dict[float, float] = {}  # wall time of a run -> its CPU seconds


ENTRY = ("-m", "bt_search")  # the console script's path (cli/launcher.py)
TYPER_ENTRY = ("-c", "import sys; from bt_search.cli.app import app; app(sys.argv[1:], prog_name='bt-search')")


def cli(env: dict, *args: str, entry: tuple[str, ...] = ENTRY) -> tuple[float, str, str]:
    start, cpu = time.perf_counter(), cpu_seconds()
    done = subprocess.run([sys.executable, *entry, *args], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    CPU[wall] = cpu_seconds() - cpu
    return wall, done.stdout, done.stderr


def start_server(env: dict, index: Path, runtime: Path) -> tuple[subprocess.Popen, float]:
    start = time.perf_counter()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bt_search",
            "serve",
            "--index",
            str(index),
            "--port",
            "0",
            "--device",
            "cpu",
            "--quiet",
        ],
        env=env,
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
    SERVER_PID.append(server.pid)
    try:
        warm_plain = []
        for i in range(args.repeat):
            seconds, out, err = cli(env, *base, QUERIES[i], "--no-rerank")
            assert "server not used" not in err, err
            warm_plain.append(seconds)
            if i == 0:
                assert out == plain_out, "served output differs from in-process"
        warm_typer = []
        for i in range(args.repeat):
            seconds, out, err = cli(env, *base, f"{QUERIES[i]}, again", "--no-rerank", entry=TYPER_ENTRY)
            assert "server not used" not in err, err
            warm_typer.append(seconds)
        first, out, _ = cli(env, *rerank, QUERIES[1])
        assert out == rerank_out, "served rerank output differs from in-process"
        cached = min(cli(env, *rerank, QUERIES[3 + i])[0] for i in range(args.repeat))
        repeat = min(cli(env, *rerank, QUERIES[3])[0] for _ in range(args.repeat))
        advert = json.loads(next((runtime / "bt-search").glob("server-*.json")).read_text())
        health = ServerClient(advert["url"]).health()
    finally:
        SERVER_PID.clear()
        server.send_signal(signal.SIGTERM)
        server.wait()

    best_plain = min(warm_plain)
    load = os.getloadavg()[0]
    print(
        f"base-shaped random checkpoint, CPU, {n} images, N={n}, cores={os.cpu_count()}, load average {load:.1f}; "
        f"server start {startup:.1f} s; state cache {health['state_cache']['entries']} entries"
    )
    print(f"{'case':<30}{'cold wall':>10}{'warm wall':>10}{'ratio':>7}{'cold CPU':>10}{'warm CPU':>10}{'ratio':>7}")
    rows = [
        ("--no-rerank", cold_plain, best_plain),
        ("--no-rerank, full typer CLI", cold_plain, min(warm_typer)),
        (f"rerank N={n}, first", cold_rerank, first),
        ("2nd query, candidates cached", cold_rerank, cached),
        ("identical repeat", cold_rerank, repeat),
    ]
    for name, cold, warm in rows:
        print(
            f"{name:<30}{cold:>9.2f}s{warm:>9.2f}s{cold / warm:>6.1f}x"
            f"{CPU[cold]:>9.2f}s{CPU[warm]:>9.2f}s{CPU[cold] / CPU[warm]:>6.1f}x"
        )
    print(f"cached candidates vs the first rerank: wall {first / cached:.1f}x, CPU {CPU[first] / CPU[cached]:.1f}x")
    typer = min(warm_typer)
    print(
        f"warm --no-rerank, light path vs full typer CLI: wall {typer / best_plain:.1f}x, CPU "
        f"{CPU[typer] / CPU[best_plain]:.1f}x"
    )


if __name__ == "__main__":
    main()
