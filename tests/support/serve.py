"""Start `bt-search serve` as a real process on an ephemeral loopback port, and talk to it (test helper)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class ServerProcess:
    def __init__(self, index: Path, runtime_dir: Path, *extra: str, env_extra: dict | None = None):
        self.runtime_dir = runtime_dir
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime_dir), PYTHONUNBUFFERED="1", **(env_extra or {}))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bt_search", "serve", "--index", str(index), "--port", "0", *extra],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.record = self._wait_for_advert(timeout=180)
        self.url = self.record["url"]
        self.port = int(self.url.rsplit(":", 1)[1])

    def _wait_for_advert(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: {self.process.stderr.read()}")
            for place in (self.runtime_dir / "bt-search").glob("server-*.json"):
                record = json.loads(place.read_text())
                if record["pid"] == self.process.pid:
                    self.advert = place
                    return record
            time.sleep(0.1)
        raise TimeoutError("the server did not advertise itself")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 120
    ):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body, {"Host": f"127.0.0.1:{self.port}", **(headers or {})})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def get_json(self, path: str):
        status, _, body = self.request("GET", path)
        assert status == 200, body
        return json.loads(body)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def terminate(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


# ---------------------------------------------------------------- in-process servers (fast client tests)


def build_index(engine, root: Path, name: str, seeds) -> Path:
    """An index `root/name` of one 64x64 noise image per seed, embedded with `engine`."""
    from bt_search.indexing.run import index_paths
    from bt_search.store import IndexIdentity, IndexWriter
    from tests.support.images import noise_image

    photos = root / f"{name}-photos"
    photos.mkdir(parents=True)
    for seed in seeds:
        noise_image(seed, 64, 64).save(photos / f"img{seed}.png")
    with IndexWriter.open(root / name, IndexIdentity.of(engine)) as writer:
        index_paths([str(photos)], writer, engine, workers=0, batch_size=4)
    return root / name


def service_for(index: Path, engine, *, device_option: str = "cpu", batch_size: int = 4):
    """A Service over `index` with an already loaded engine (no model load per test)."""
    from bt_search.serve.discovery import canonical_index
    from bt_search.serve.service import Service
    from bt_search.store import IndexReader

    directory = Path(canonical_index(index))
    settings = {"device_option": device_option, "precision_option": "fp32"}
    return Service(
        directory,
        IndexReader.open(directory),
        engine,
        settings=settings,
        state_cache_bytes=8 << 20,
        batch_size=batch_size,
    )


class InProcessServer:
    """uvicorn serving `make_app(port)` from a thread of this process, on a loopback port (signals are left
    alone off the main thread). `stop()` asks it to exit as SIGTERM does and says how long that took."""

    def __init__(self, make_app, host: str = "127.0.0.1", graceful_s: float = 1.0):
        import socket
        import threading

        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.app = make_app(self.port)
        config = uvicorn.Config(
            self.app, log_level="critical", access_log=False, timeout_graceful_shutdown=graceful_s, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.02)

    def stop(self, timeout: float = 60) -> float:
        started = time.monotonic()
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
        return time.monotonic() - started

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def advertise(index: Path, url: str, key: str | None, **fields) -> Path:
    """Write a discovery record for `index` as a server does (mode 0600; $XDG_RUNTIME_DIR must be set)."""
    from bt_search.serve.discovery import write_server_file

    record = {"url": url, "pid": os.getpid(), "index": str(index), **fields}
    if key is not None:
        record["key"] = key
    return write_server_file(index, record)


class FakeServer:
    """A stdlib HTTP server on a loopback port answering `respond(method, path, body)` -> (status, headers, JSON),
    with the proof of `key` when given; `requests` records (method, path, body) of everything it was sent."""

    def __init__(self, respond, key: str | None = None, host: str = "127.0.0.1"):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str, bytes]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                fake.requests.append((self.command, self.path, body))
                status, headers, data = respond(self.command, self.path, body)
                payload = json.dumps(data).encode()
                self.send_response(status)
                for name, value in {**headers, "content-type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                if key is not None:
                    from bt_search.serve.discovery import NONCE_HEADER, PROOF_HEADER, answer_proof

                    nonce = self.headers.get(NONCE_HEADER)
                    if nonce is not None:
                        self.send_header(PROOF_HEADER, answer_proof(key, nonce, payload))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def health_for(index: Path, **changes) -> dict:
    """A /health answer that `client.mismatch` accepts for `index`, model "m", device cpu, precision fp32."""
    from bt_search.serve.discovery import canonical_index

    health = {
        "status": "ok",
        "index": canonical_index(index),
        "index_model": "m",
        "model": "m",
        "device": "cpu",
        "device_option": "cpu",
        "auto_device": "cpu",
        "dtype": "float32",
        "rerank_dtype": "float32",
        "precision_option": "fp32",
    }
    return {**health, **changes}


def ask_server(index, queries, notes: list[str], **options):
    """Hits per query from a server advertised for `index`, as `bt-search query` on CPU in fp32 asks for a plain
    query with `options` (QueryRequest's fields), or None: search in-process. The client's notices go to `notes`."""
    from bt_search.search.query import QueryRequest
    from bt_search.serve.client import served_results

    answer = served_results(
        str(index),
        model=None,
        device="cpu",
        precision="fp32",
        request=QueryRequest(queries=tuple(queries), **options),
        on_missing=lambda path, reason: None,
        notice=notes.append,
    )
    return None if answer is None else answer[0]
