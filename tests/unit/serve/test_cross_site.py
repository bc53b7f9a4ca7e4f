"""Browsers' cross-site requests are refused (the CLI and curl send no Origin or Sec-Fetch-Site), and one
request may not ask for more than MAX_CANDIDATES candidates (queries x shortlist): 413 JSON, and `query`
then searches in-process."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from bt_search.serve.app import build_app
from bt_search.serve.runner import allowed_hosts
from tests.support.serve import InProcessServer, advertise, ask_server, build_index, service_for

KEY = "d" * 64


@pytest.fixture(scope="module")
def service(engine, tmp_path_factory):
    return service_for(build_index(engine, tmp_path_factory.mktemp("cross-site"), "index", range(950, 956)), engine)


@pytest.fixture(scope="module")
def client(service):
    app = build_app(service, allowed_hosts=allowed_hosts("127.0.0.1", 8765), token=None, max_queue=4)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        yield client


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 200),  # the CLI, curl
        ({"Sec-Fetch-Site": "same-origin"}, 200),  # the page's own thumbnails and form
        ({"Sec-Fetch-Site": "none"}, 200),  # typed in the address bar, a bookmark
        ({"Origin": "http://127.0.0.1:8765"}, 200),
        ({"Origin": "http://localhost:8765", "Sec-Fetch-Site": "same-origin"}, 200),
        ({"Sec-Fetch-Site": "cross-site"}, 403),  # <img src=...> or a link on any web page
        ({"Sec-Fetch-Site": "same-site"}, 403),  # another port of localhost is another origin
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "http://127.0.0.1:9999"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"}, 403),
    ],
)
@pytest.mark.parametrize("path", ["/api/search?q=red&rerank=false", "/?q=red&rerank=false", "/health"])
def test_cross_site_browser_requests_are_refused(client, headers, status, path):
    response = client.get(path, headers=headers)
    assert response.status_code == status, response.text
    if status == 403:
        assert "cross-site" in response.json()["error"]


def test_one_request_may_not_ask_for_too_many_candidates(client):
    from bt_search.serve.service import MAX_CANDIDATES

    queries = [f"query {i}" for i in range(256)]
    response = client.get("/api/search", params={"q": queries, "shortlist": 1000})
    assert response.status_code == 413 and "256 queries x 1000 candidates" in response.json()["error"]
    body = {"queries": queries[:100], "options": {"shortlist": 50}}
    assert client.post("/api/query", json=body).status_code == 413
    body = {"queries": queries[:100], "options": {"top_k": 50}}  # top_k raises the shortlist too
    assert client.post("/api/query", json=body).status_code == 413
    body = {"queries": queries[: MAX_CANDIDATES // 20], "options": {"shortlist": 20, "rerank": False}}
    assert client.post("/api/query", json=body).status_code == 200


def test_a_request_too_big_for_the_server_is_searched_in_process(service, tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))

    def make_app(port):
        return build_app(service, allowed_hosts=allowed_hosts("127.0.0.1", port), token=None, max_queue=4, key=KEY)

    with InProcessServer(make_app) as server:
        advertise(service.index_dir, server.url, KEY)
        notes: list[str] = []
        # a --queries-file of 300 lines
        answer = ask_server(service.index_dir, [f"query {i}" for i in range(300)], notes, top_k=10)
    assert answer is None and len(notes) == 1 and "413" in notes[0]
