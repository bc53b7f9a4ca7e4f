"""`/api/search?stream=1` (or Accept: application/x-ndjson): the shortlist first, reranked updates as chunks
finish, and a last line equal to the plain answer; the plain answer is unchanged."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from bt_search.serve.app import build_app
from bt_search.serve.runner import allowed_hosts
from tests.support.serve import build_index, service_for

SEARCH = "/api/search?q=a+red+circle&top_k=4&shortlist=6"


@pytest.fixture(scope="module")
def index(engine, tmp_path_factory):
    return build_index(engine, tmp_path_factory.mktemp("stream"), "index", range(960, 968))


def client_for(index, engine):
    app = build_app(
        service_for(index, engine, batch_size=2),
        allowed_hosts=allowed_hosts("127.0.0.1", 8765),
        token=None,
        max_queue=4,
    )
    return TestClient(app, base_url="http://127.0.0.1:8765")


def lines_of(client, path: str, headers: dict | None = None) -> list[dict]:
    with client.stream("GET", path, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def test_the_stream_ends_with_the_plain_answer(index, engine):
    with client_for(index, engine) as plain_client:
        plain = plain_client.get(SEARCH).json()
    assert "partial" not in plain
    with client_for(index, engine) as client:  # its own caches: the stream runs the whole search
        lines = lines_of(client, SEARCH + "&stream=1")
        assert lines[-1] == plain
        assert [line["partial"] for line in lines[:-1]] == ["shortlist"] + ["reranking"] * (len(lines) - 2)
        assert len(lines) >= 3  # 6 candidates in chunks of 2: the shortlist, a partial rerank, the answer
        shortlist = lines[0]["hits"]
        assert all(hit["itm"] is None for hit in shortlist)
        assert [hit["shortlist_rank"] for hit in shortlist] == [1, 2, 3, 4]
        assert all(any(h["itm"] is not None for h in line["hits"]) for line in lines[1:])
        for thumbnail in lines[0]["thumbnails"]:  # the shortlist's thumbnails are served at once
            assert client.get(thumbnail).status_code == 200
        again = lines_of(client, SEARCH, {"Accept": "application/x-ndjson"})
        assert again == [plain]  # a cached answer: its last line alone


def test_a_bad_streamed_request_keeps_its_status(index, engine):
    with client_for(index, engine) as client:
        response = client.get("/api/search?q=red&top_k=0&stream=1")
        assert response.status_code == 400 and "top_k" in response.json()["error"]


def test_the_page_shows_the_shortlist_first_and_asks_for_the_reranked_order(index, engine):
    with client_for(index, engine) as client:
        first = client.get("/?q=a+red+circle").text
        assert '<meta http-equiv="refresh" content="0; url=/?q=a+red+circle&amp;rerank=true&amp;ranked=1">' in first
        assert 'class="pending"' in first and 'class="itm"' not in first
        final = client.get("/?q=a+red+circle&rerank=true&ranked=1").text
        assert "http-equiv" not in final and 'class="pending"' not in final and 'class="itm"' in final
        assert client.get("/?q=a+red+circle").text == final  # answered already: the reranked page at once
        assert "http-equiv" not in client.get("/?q=blue&rerank=false").text  # cosine asked for: one step
