"""A removed index: the server answers 503 JSON everywhere, and `query` searches in-process, which reports
the missing index as it always does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from starlette.testclient import TestClient

from bt_search.serve.app import build_app
from bt_search.serve.runner import allowed_hosts
from tests.support.serve import InProcessServer, advertise, ask_server, build_index, service_for

KEY = "c" * 64


def test_a_removed_index_answers_503_json_on_every_route(engine, tmp_path):
    index = build_index(engine, tmp_path, "index", range(500, 504))
    client = TestClient(build_app(service_for(index, engine), allowed_hosts={"testserver"}, token=None, max_queue=4))
    assert client.get("/health").status_code == 200
    assert client.get("/api/search", params={"q": "red"}).status_code == 200  # now in the result cache
    shutil.rmtree(index)
    for method, path, body in [
        ("GET", "/health", None),
        ("GET", "/api/search?q=red", None),
        ("GET", "/?q=red", None),
        ("GET", "/", None),
        ("POST", "/api/query", {"queries": ["red"]}),
    ]:
        response = client.request(method, path, json=body)
        assert response.status_code == 503, (path, response.text)
        assert response.headers["content-type"] == "application/json", path
        assert "no index at" in response.json()["error"], path


def test_query_falls_back_to_in_process_which_reports_the_missing_index(engine, tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    index = build_index(engine, tmp_path, "index", range(500, 504))
    service = service_for(index, engine)

    def make_app(port):
        return build_app(service, allowed_hosts=allowed_hosts("127.0.0.1", port), token=None, max_queue=4, key=KEY)

    with InProcessServer(make_app) as server:
        record = advertise(index, server.url, KEY)
        shutil.rmtree(index)
        notes: list[str] = []
        answer = ask_server(index, ["red"], notes, top_k=1, shortlist=4)
        assert answer is None and len(notes) == 1 and "503" in notes[0] and "no index at" in notes[0]
        env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
        args = ["query", "red", "--index", str(index), "--device", "cpu", "--precision", "fp32"]
        result = subprocess.run([sys.executable, "-m", "bt_search", *args], capture_output=True, text=True, env=env)
    assert record.exists()  # the server was advertised all along
    assert result.returncode != 0 and result.stdout == ""
    assert "server not used" in result.stderr and f"no index at {index}" in result.stderr.splitlines()[-1]
