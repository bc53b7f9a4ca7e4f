"""`/api/search?stream=1` and `/api/query` with Accept: application/x-ndjson: the shortlist first, reranked
updates as chunks finish, and a last line equal to the plain answer, for every option; the plain answer is
unchanged. With a nonce, each streamed line carries its own proof, and the CLI's client uses none it cannot
prove."""

from __future__ import annotations

import io
import json

import pytest
from starlette.testclient import TestClient

from bt_search.serve.app import build_app
from bt_search.serve.client import ServerClient, ServerUnusable
from bt_search.serve.discovery import LINE_PROOFS, NONCE_HEADER, PROOF_HEADER, answer_proof, line_proof
from bt_search.serve.runner import allowed_hosts
from bt_search.serve.service import OPTION_RULES
from tests.support.serve import build_index, service_for

SEARCH = "/api/search?q=a+red+circle&top_k=4&shortlist=6"


@pytest.fixture(scope="module")
def index(engine, tmp_path_factory):
    return build_index(engine, tmp_path_factory.mktemp("stream"), "index", range(960, 968))


def client_for(index, engine, key=None):
    app = build_app(
        service_for(index, engine, batch_size=2),
        allowed_hosts=allowed_hosts("127.0.0.1", 8765),
        token=None,
        max_queue=4,
        key=key,
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


def photo(index, seed: int) -> str:
    """An indexed image's path, as the index stores it (build_index puts the photos beside the index)."""
    return str((index.parent / f"{index.name}-photos" / f"img{seed}.png").resolve())


# Every option /api/query takes (serve.service.OPTION_RULES), each away from its default in one case
QUERY_CASES = [
    {"top_k": 3, "shortlist": 5, "threshold": -5.0, "score": "itm", "rerank_budget": 60.0},
    {"nots": ["blue"], "likes": ["{img961}"], "unlikes": ["{img962}"], "fold": False, "top_k": 4},
    {"after": "2000-01-01", "before": "2100-12-31", "sort": "date", "frames": "all", "under": "{photos}"},
    {"explain": True, "top_k": 2, "shortlist": 4, "min_match": 0.0},
    {"rerank": False, "top_k": 5},
]


def test_the_query_cases_set_every_option():
    assert set().union(*QUERY_CASES) == set(OPTION_RULES)


def filled(options: dict, index) -> dict:
    places = {"photos": str(index.parent / f"{index.name}-photos"), **{f"img{s}": photo(index, s) for s in (961, 962)}}
    fill = lambda v: v.format(**places) if isinstance(v, str) else v  # noqa: E731
    return {
        name: [fill(v) for v in value] if isinstance(value, list) else fill(value) for name, value in options.items()
    }


@pytest.mark.parametrize("options", QUERY_CASES, ids=lambda options: ",".join(options))
def test_a_streamed_api_query_ends_with_the_plain_answer(index, engine, options):
    body = {"queries": ["a red circle", "two green triangles"], "options": filled(options, index)}
    with client_for(index, engine) as plain_client:  # each client its own caches: both run the whole search
        response = plain_client.post("/api/query", json=body)
        assert response.status_code == 200, response.text
        plain = response.json()
    with client_for(index, engine) as client:
        with client.stream("POST", "/api/query", json=body, headers={"Accept": "application/x-ndjson"}) as response:
            assert response.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[-1] == plain and plain["results"][0]
    partial = lines[:-1]
    if options.get("rerank", True):  # the shortlist first, cosine only, then the rerank's order
        assert [line["partial"] for line in partial][:1] == ["shortlist"] and len(partial) >= 2
        assert all(hit["itm"] is None for hits in partial[0]["results"] for hit in hits)
        assert set(partial[0]) == {"partial", "results"}
    else:
        assert partial == []


def test_streamed_lines_are_proven_one_by_one(index, engine):
    body = {"queries": ["a blue square"], "options": {"top_k": 3, "shortlist": 5}}
    headers = {NONCE_HEADER: "n0nce", "Accept": "application/x-ndjson"}
    with client_for(index, engine, key="secret") as client:
        with client.stream("POST", "/api/query", json=body, headers=headers) as response:
            assert response.headers[PROOF_HEADER] == LINE_PROOFS
            raw = [line for line in response.iter_lines() if line]
        plain = client.post("/api/query", json=body, headers={NONCE_HEADER: "other"})
    lines = []
    for number, line in enumerate(raw):
        proof, _, text = line.partition(" ")
        assert proof == line_proof("secret", "n0nce", number, text.encode())
        lines.append(json.loads(text))
    assert len(lines) >= 3 and lines[-1] == plain.json()  # a cached answer, proven as a whole
    assert plain.headers[PROOF_HEADER] == answer_proof("secret", "other", plain.content)


class _Response:
    """What ServerClient reads of a streamed http.client response."""

    def __init__(self, lines: list[bytes], proof: str | None = LINE_PROOFS):
        self.body, self.proof = io.BytesIO(b"".join(line + b"\n" for line in lines)), proof

    def getheader(self, name: str):
        return self.proof if name == PROOF_HEADER else None

    def readline(self) -> bytes:
        return self.body.readline()


def proven(lines: list[dict], key="k", nonce="n") -> list[bytes]:
    texts = [json.dumps(line).encode() for line in lines]
    return [line_proof(key, nonce, number, text).encode() + b" " + text for number, text in enumerate(texts)]


STREAM = [
    {"partial": "shortlist", "results": [[{"rank": 1}]]},
    {"partial": "reranking", "results": []},
    {"results": []},
]


def test_the_client_hears_proven_partials_and_returns_the_last_line():
    heard = []
    client = ServerClient("http://127.0.0.1:9", key="k")
    assert client._streamed_answer(_Response(proven(STREAM)), "n", heard.append) == STREAM[-1]
    assert heard == STREAM[:-1]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda lines: [lines[0].replace(b'"rank": 1', b'"rank": 2'), *lines[1:]],  # a line changed
        lambda lines: [lines[1], lines[0], lines[2]],  # reordered
        lambda lines: lines[1:],  # one dropped
        lambda lines: lines[:-1],  # the answer missing
        lambda lines: [*lines[:-1], proven([{"results": [[{"rank": 9}]]}], nonce="old")[0]],  # another stream's
    ],
    ids=["changed", "reordered", "dropped", "truncated", "replayed"],
)
def test_the_client_refuses_a_stream_it_cannot_prove(tamper):
    heard = []
    client = ServerClient("http://127.0.0.1:9", key="k")
    with pytest.raises(ServerUnusable):
        client._streamed_answer(_Response(tamper(proven(STREAM))), "n", heard.append)
    with pytest.raises(ServerUnusable):  # unproven lines, from a server that does not prove them
        client._streamed_answer(
            _Response([json.dumps(line).encode() for line in STREAM], proof=None), "n", heard.append
        )
