"""Watch mode: file written -> findable, for 1 file and for a burst, and the CPU an idle watcher uses.

Indexes `--existing` images under a folder, starts a Watcher over it in a thread of this process (as
`bt-search index PATHS --watch` does, with its defaults: events, 1.6 s debounce, batches of 16), then
  1. writes one image at a time into a folder holding the existing ones, `--singles` times, and times each from
     the file's close to the moment a fresh IndexReader holds it (what a search sees);
  2. writes `--burst` images as fast as it can into another folder and times the last one's close -> all held;
  3. lets the watcher idle for `--idle` seconds and reads this process's CPU time from /proc/self/stat over
     that span (the watcher's thread and watchfiles' thread are all that run), with events and with polling;
  4. times a batch for one new file against a catch-up of the whole root (what an event would cost if it
     rescanned everything). `--library N` adds N more indexed files in folders of 500 (rows with random
     embeddings, committed directly: a large library without embedding it), so the difference shows.

    python benchmarks/bench_watch.py --existing 1000 --burst 1000 --idle 30
    python benchmarks/bench_watch.py --existing 100 --burst 100 --idle 5 --singles 3 --library 50000
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bt_search.engine.loading import load_engine  # noqa: E402
from bt_search.indexing.run import index_paths  # noqa: E402
from bt_search.store import ImageRow, IndexIdentity, IndexReader, IndexWriter  # noqa: E402
from bt_search.watch.status import WatchStatus  # noqa: E402
from bt_search.watch.watcher import Watcher, WatchOptions  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def png_bytes(seed: int, side: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def cpu_seconds() -> float:
    """This process's user + system CPU time, all threads, from /proc/self/stat."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def held(index: Path, paths: list[str]) -> int:
    return len(IndexReader.open(index).indexed_paths(paths))


def wait_held(index: Path, paths: list[str], timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while held(index, paths) < len(paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{held(index, paths)} of {len(paths)} files indexed after {timeout} s")
        time.sleep(0.01)
    return time.perf_counter()


class Running:
    def __init__(self, index: Path, root: Path, engine, poll: float | None = None):
        self.status, self.stop = WatchStatus(), threading.Event()
        self.watcher = Watcher(
            index, [root], engine, options=WatchOptions(poll=poll), status=self.status, stop=self.stop
        )
        self.watcher.start()
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)
        self.thread.start()

    def wait_batches(self, count: int) -> None:
        """Until `count` batches have ended (a file is findable at its commit, before its batch ends)."""
        while self.status.state.batches < count:
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.watcher.close()


def add_library(root: Path, index: Path, count: int, dim: int) -> None:
    """`count` more files under root/library/dNNN/ (500 a folder), indexed as rows with random embeddings."""
    data, rng = png_bytes(1), np.random.default_rng(0)
    with IndexWriter.open(index, lambda: None) as writer:
        rows = []
        for i in range(count):
            folder = root / "library" / f"d{i // 500:04}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{i:06}.png"
            write(path, data)
            info = path.stat()
            vector = rng.standard_normal(dim).astype(np.float32)
            rows.append(
                ImageRow(
                    str(path), info.st_size, info.st_mtime_ns, f"{i:064x}", 96, 96, vector / np.linalg.norm(vector)
                )
            )
            if len(rows) == 5000:
                writer.commit(rows)
                rows = []
        writer.commit(rows)
        writer.finish()


def idle_cpu(seconds: float) -> float:
    time.sleep(2)  # let the last batch's echoes settle
    before = cpu_seconds()
    time.sleep(seconds)
    return cpu_seconds() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--existing", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=5)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=5.0, help="polling interval for the polling idle run")
    parser.add_argument("--library", type=int, default=0, help="more indexed files, embedded at random")
    parser.add_argument("--model", default=str(ROOT / "sample_data" / "demo-model"))
    args = parser.parse_args()

    engine = load_engine(args.model, device="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    root, index = tmp / "photos", tmp / "index"
    (root / "existing").mkdir(parents=True)
    (root / "burst").mkdir()
    for i in range(args.existing):
        write(root / "existing" / f"{i:05}.png", png_bytes(i))
    started = time.perf_counter()
    with IndexWriter.open(index, IndexIdentity.of(engine)) as writer:
        index_paths([str(root)], writer, engine, workers=0)
    print(f"indexed {args.existing} existing images in {time.perf_counter() - started:.1f} s")
    if args.library:
        add_library(root, index, args.library, engine.embedding_dim)
        print(f"added a library of {args.library} indexed files in folders of 500")

    running = Running(index, root, engine)
    latencies, batch_seconds = [], []
    for i in range(args.singles):
        path = root / "existing" / f"new-{i}.png"
        data = png_bytes(10_000_000 + i)
        time.sleep(2.5)  # a lone file, not part of a burst
        batches = running.status.state.batches
        write(path, data)
        written = time.perf_counter()
        latencies.append(wait_held(index, [str(path)]) - written)
        running.wait_batches(batches + 1)
        batch_seconds.append(running.status.state.last_batch.get("seconds", float("nan")))
    print(
        f"1 file: written -> findable median {statistics.median(latencies):.2f} s "
        f"(min {min(latencies):.2f}, max {max(latencies):.2f}; n={len(latencies)}); "
        f"its batch (list the folder of {args.existing} files, embed, commit, finish) median "
        f"{statistics.median(batch_seconds):.3f} s"
    )

    time.sleep(2.5)
    batches_before = running.status.state.batches
    data = [png_bytes(20_000_000 + i) for i in range(args.burst)]
    paths = [root / "burst" / f"{i:05}.png" for i in range(args.burst)]
    first = time.perf_counter()
    for path, payload in zip(paths, data):
        write(path, payload)
    last = time.perf_counter()
    done = wait_held(index, [str(p) for p in paths])
    running.wait_batches(batches_before + 1)
    print(
        f"{args.burst} files: written in {last - first:.2f} s; last written -> all findable {done - last:.2f} s, "
        f"first written -> all findable {done - first:.2f} s, in {running.status.state.batches - batches_before} "
        "batch(es)"
    )

    print(f"idle, events: {idle_cpu(args.idle):.2f} CPU s over {args.idle:g} s")
    running.close()

    full = Watcher(index, [root], engine)
    started = time.perf_counter()
    full.catch_up()
    files = args.existing + args.burst + args.singles + args.library
    print(f"catch-up of the whole root ({files} files, nothing new): {time.perf_counter() - started:.3f} s")

    running = Running(index, root, engine, poll=args.poll)
    cpu = idle_cpu(args.idle)
    print(f"idle, polling every {args.poll:g} s over {files} files: {cpu:.2f} CPU s over {args.idle:g} s")
    running.close()


if __name__ == "__main__":
    main()
