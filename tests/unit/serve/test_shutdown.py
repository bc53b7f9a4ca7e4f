"""Stopping: SIGTERM ends a long search between rerank chunks once the grace period is over, and the idle
timeout never stops a server with a request in flight."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bt_search.search.searcher import Searcher
from bt_search.serve.app import Guard, build_app
from bt_search.serve.client import ServerClient, ServerUnusable
from bt_search.serve.runner import _exit_when_idle, allowed_hosts
from bt_search.store import IndexReader
from tests.support.serve import InProcessServer, build_index, service_for


@pytest.fixture(scope="module")
def index(engine, tmp_path_factory):
    return build_index(engine, tmp_path_factory.mktemp("shutdown"), "index", range(800, 808))


def slow_fusion(engine, monkeypatch, seconds: float) -> threading.Event:
    """Each ITM chunk takes `seconds`; the event is set when the first one starts."""
    started, itm_scores = threading.Event(), engine.itm_scores

    def slow(*args):
        started.set()
        time.sleep(seconds)
        return itm_scores(*args)

    monkeypatch.setattr(engine, "itm_scores", slow)
    return started


def test_the_cancelled_hook_stops_a_rerank_between_chunks(engine, index, monkeypatch):
    from bt_search.errors import SearchCancelledError

    started = slow_fusion(engine, monkeypatch, 0.0)
    chunks: list[int] = []
    searcher = Searcher(
        IndexReader.open(index), engine, batch_size=1, cancelled=lambda: chunks.append(1) or len(chunks) > 2
    )
    with pytest.raises(SearchCancelledError):
        searcher.search(["a red circle"], top_k=3, shortlist=8)
    assert started.is_set() and len(chunks) == 3  # two chunks ran, the third was not started


def test_stopping_the_server_cancels_a_long_search_after_the_grace_period(engine, index, monkeypatch):
    """uvicorn cancels the request's task after its grace period, but the search goes on in its worker thread
    (and a real process waits for that thread before it exits) unless the search itself is told to stop."""
    started = slow_fusion(engine, monkeypatch, 2.0)  # 8 chunks of one candidate: 16 s uncancelled
    service = service_for(index, engine, batch_size=1)
    search, ended, raised = service.search, threading.Event(), []

    def watched(*args, **kwargs):
        try:
            return search(*args, **kwargs)
        except BaseException as err:
            raised.append(err)
            raise
        finally:
            ended.set()

    monkeypatch.setattr(service, "search", watched)

    def make_app(port):
        return build_app(service, allowed_hosts=allowed_hosts("127.0.0.1", port), token=None, max_queue=4)

    server = InProcessServer(make_app, graceful_s=0.5)

    def ask() -> None:
        try:
            ServerClient(server.url).search(["a red circle"], {"top_k": 3, "shortlist": 8})
        except ServerUnusable:  # the connection closed by the shutdown
            pass

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    assert started.wait(30)
    stopping = time.monotonic()
    server.stop(timeout=60)
    assert ended.wait(30)
    took = time.monotonic() - stopping
    assert took < 9, took  # grace 0.5 s + at most the chunk in progress (2 s), not the rest of the 16 s search
    from bt_search.errors import SearchCancelledError

    assert len(raised) == 1 and isinstance(raised[0], SearchCancelledError)


def test_the_idle_timeout_waits_for_a_request_in_flight():
    release, entered = threading.Event(), threading.Event()

    def slow(request):
        entered.set()
        release.wait(30)
        return PlainTextResponse("done")

    guard = Guard(Starlette(routes=[Route("/slow", slow)]), allowed_hosts={"testserver"}, token=None)
    server, said = SimpleNamespace(should_exit=False), []
    with TestClient(guard) as client:
        responses: list[int] = []
        request = threading.Thread(target=lambda: responses.append(client.get("/slow").status_code))
        request.start()
        assert entered.wait(10)
        _exit_when_idle(server, guard, 0.3, said.append)
        time.sleep(1.5)  # five idle timeouts since the request began
        assert not server.should_exit and said == []
        release.set()
        request.join(10)
        deadline = time.monotonic() + 10
        while not server.should_exit and time.monotonic() < deadline:
            time.sleep(0.05)
    assert responses == [200] and server.should_exit and said == ["no request for 0.3 s: stopping"]
