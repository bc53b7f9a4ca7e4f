"""`bt-search serve` on an index, for scripts that screenshot its search page (docs/*.png): a subprocess on
127.0.0.1 with its own runtime folder, waited for through /health, stopped on exit."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def page_server(index: Path, work: Path, port: int, *args: str) -> Iterator[str]:
    """The server's base URL while it runs (`args`: more `serve` flags)."""
    runtime = work / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "bt_search", "serve", "--index", str(index), "--port", str(port), *args]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
