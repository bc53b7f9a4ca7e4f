"""Idle time spent where it pays: after a query whose shortlist was cut short of the candidates just past it,
an idle server computes those candidates' vision states, one image at a time, stops when a request arrives, and
never goes past the state cache's budget (nothing cached is evicted for it)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from bt_search.serve.app import build_app
from bt_search.serve.idle import IdleStates
from bt_search.serve.runner import allowed_hosts
from tests.support.serve import build_index, service_for

QUERY = "a red circle"


@pytest.fixture(scope="module")
def index(engine, tmp_path_factory):
    return build_index(engine, tmp_path_factory.mktemp("idle"), "index", range(970, 982))


def idle_service(index, engine, idle_seconds):
    service = service_for(index, engine)
    idle = IdleStates(service, idle_seconds=idle_seconds, settle_s=0.1)
    service.on_unreranked, service.lookahead = idle.offer, 4
    return service, idle


def cached_paths(service) -> set[str]:
    return {key[1] for key in service.states._states}


def test_idle_time_fills_the_cache_with_the_candidates_past_the_shortlist(index, engine):
    service, idle = idle_service(index, engine, lambda: 1.0)
    (hits,) = service.search([QUERY], {"top_k": 3, "shortlist": 3, "fold": False}).results
    reranked = cached_paths(service)
    assert len(reranked) == 3 and len(idle.pending) == 4
    assert idle.run_until_busy() == 4 and not idle.pending
    deeper = service.search([QUERY], {"top_k": 7, "shortlist": 7, "rerank": False, "fold": False}).results[0]
    assert cached_paths(service) == reranked | {h.path for h in deeper[3:7]}  # the next four by cosine
    # a state computed while idle is the one a search computes (up to the last bits: alone, not in a batch)
    fresh = service_for(index, engine)
    fresh.search([QUERY], {"top_k": 7, "shortlist": 7, "fold": False})
    for path in (h.path for h in deeper[3:7]):
        key = (service.reader.state_id, path)
        torch.testing.assert_close(service.states.get(key), fresh.states.get(key), atol=1e-5, rtol=1e-5)
    # and the next query that reaches them reranks the same, from the cache
    assert np.allclose(
        [h.score for h in service.search([QUERY], {"top_k": 7, "shortlist": 7, "fold": False}).results[0]],
        [h.score for h in fresh.search([QUERY], {"top_k": 7, "shortlist": 7, "fold": False}).results[0]],
        atol=1e-5,
    )


def test_idle_work_stops_when_a_request_arrives(index, engine):
    calls = []

    def idle_seconds() -> float:  # idle for the first image; then a request is in flight
        calls.append(1)
        return 1.0 if len(calls) <= 2 else 0.0

    service, idle = idle_service(index, engine, idle_seconds)
    service.search([QUERY], {"top_k": 3, "shortlist": 3, "fold": False})
    assert idle.run_until_busy() == 1 and len(idle.pending) == 3  # the rest waits for the next idle spell


def test_idle_work_stays_within_the_state_budget(index, engine):
    service, idle = idle_service(index, engine, lambda: 1.0)
    service.search([QUERY], {"top_k": 3, "shortlist": 3, "fold": False})
    kept = dict(service.states._states)
    one = next(iter(kept.values()))
    service.states.budget_bytes = service.states.used_bytes + 2 * one.numel() * one.element_size()
    assert idle.run_until_busy() == 2 and len(idle.pending) == 2
    assert all(key in service.states for key in kept)  # nothing the searches cached was dropped
    assert service.states.used_bytes <= service.states.budget_bytes


def test_the_server_computes_them_on_its_own_while_idle(index, engine):
    service = service_for(index, engine)
    app = build_app(service, allowed_hosts=allowed_hosts("127.0.0.1", 8765), token=None, max_queue=4, idle_states=True)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        assert client.get("/api/search?q=red&top_k=2&shortlist=2").status_code == 200
        deadline = time.monotonic() + 30
        while app.idle_states.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not app.idle_states.pending and app.idle_states.computed >= 1
        assert len(service.states) == 2 + app.idle_states.computed
