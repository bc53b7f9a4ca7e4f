"""Malformed API requests answer 400 JSON naming the problem (never 500 with a traceback)."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from bt_search.serve.app import build_app
from tests.support.serve import build_index, service_for


@pytest.fixture(scope="module")
def client(engine, tmp_path_factory):
    service = service_for(build_index(engine, tmp_path_factory.mktemp("payloads"), "index", range(960, 964)), engine)
    with TestClient(build_app(service, allowed_hosts={"testserver"}, token=None, max_queue=4)) as client:
        yield client


QUERY_PAYLOADS = [
    ("{}", "'queries' is missing"),
    ('{"queries": "red"}', "queries must be a list of strings"),
    ('{"queries": [1]}', "queries must be a list of strings"),
    ('{"queries": []}', "at least one query"),
    ('{"queries": ["red"], "options": []}', "options must be an object"),
    ('{"queries": ["red"], "query": "x"}', "unexpected field(s) query"),
    ('{"queries": ["red"], "options": {"rerank_budget": "soon"}}', "rerank_budget must be"),
    ('{"queries": ["red"], "options": {"rerank_budget": -1}}', "rerank_budget must be"),
    ('{"queries": ["red"], "options": {"where": "1 = 1"}}', "unsupported search option(s): where"),
    ('{"queries": ["\\ud800"]}', "not valid Unicode"),
    ('{"queries": ["red \\udcff"]}', "not valid Unicode"),
    ('{"queries": ["red"], "options": {"top_k": null}}', "top_k must be"),
    ('{"queries": ["red"], "options": {"top_k": 2.5}}', "top_k must be"),
    ('{"queries": ["red"], "options": {"shortlist": true}}', "shortlist must be"),
    ('{"queries": ["red"], "options": {"threshold": NaN}}', "threshold must be"),
    ('{"queries": ["red"], "options": {"threshold": "0.5"}}', "threshold must be"),
    ('{"queries": ["red"], "options": {"score": "best"}}', "score must be one of"),
    ('{"queries": ["red"], "options": {"rerank": "yes"}}', "rerank must be"),
    ('{"queries": ["red"], "options": {"under": 5}}', "under must be"),
    ('{"queries": ["   "]}', "empty query"),
    ("[1, 2]", "must be a JSON object"),
    ('{"queries": ["red"', "not JSON"),
]


@pytest.mark.parametrize("body, message", QUERY_PAYLOADS, ids=[body[:40] for body, _ in QUERY_PAYLOADS])
def test_malformed_query_payloads_answer_400_naming_the_problem(client, body, message):
    response = client.post("/api/query", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"path": 5}, "path must be a string"),
        ({}, "'path' is missing"),
        ({"path": "/x.png", "options": {"shortlist": 3}}, "unsupported similar option(s): shortlist"),
        ({"path": "/x.png", "options": {"top_k": "3"}}, "top_k must be"),
    ],
)
def test_malformed_similar_payloads_answer_400(client, body, message):
    response = client.post("/api/similar", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == 400 and message in response.json()["error"], response.text


@pytest.mark.parametrize(
    "params, message",
    [
        ({"q": "red", "threshold": "nan"}, "threshold must be"),
        ({"q": "red", "top_k": "0"}, "top_k must be"),
        ({"q": "red", "shortlist": "1e3"}, "integers"),
    ],
)
def test_malformed_search_parameters_answer_400(client, params, message):
    response = client.get("/api/search", params=params)
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_a_well_formed_request_with_every_option_is_answered(client):
    options = {"top_k": 2, "shortlist": 3, "rerank": True, "threshold": None, "under": None, "score": "itm"}
    response = client.post("/api/query", json={"queries": ["red"], "options": {**options, "rerank_budget": 60}})
    assert response.status_code == 200 and len(response.json()["results"][0]) == 2
