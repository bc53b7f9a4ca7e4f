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
