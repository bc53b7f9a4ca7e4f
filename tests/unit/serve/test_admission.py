"""A busy server is waited for (429 + Retry-After), not replaced by loading the model in-process, and its
default queue fits a shell's `xargs -P 12` of queries."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor

from bt_search import config
from bt_search.serve import client
from bt_search.serve.app import build_app
from bt_search.serve.runner import ServeSettings, allowed_hosts
from tests.support.serve import (
    FakeServer,
    InProcessServer,
    advertise,
    ask_server,
    build_index,
    health_for,
    service_for,
)

KEY = "k" * 64
HIT = {"query": "red", "rank": 1, "path": "/photos/a.png", "score": 0.5, "similarity": 0.4, "shortlist_rank": 1}
OPTIONS = {"top_k": 2, "under": None, "shortlist": 4, "rerank": True, "threshold": None}


def ask(index, notes: list[str], query: str = "red"):
    return ask_server(index, [query], notes, **OPTIONS)


def test_a_busy_server_is_waited_for_instead_of_searching_in_process(tmp_path, runtime):
    index = tmp_path / "index"
    index.mkdir()
    refusals = [3]

    def respond(method, path, body):
        if path == "/health":
            return 200, {}, health_for(index)
        if refusals[0]:
            refusals[0] -= 1
            return 429, {"Retry-After": "0.1"}, {"error": "busy"}
        return 200, {}, {"results": [[HIT]], "missing": []}

    with FakeServer(respond, KEY) as fake:
        advertise(index, fake.url, KEY)
        notes: list[str] = []
        results = ask(index, notes)
    assert notes == [] and results is not None and [hit.path for hit in results[0]] == ["/photos/a.png"]
    assert [path for _, path, _ in fake.requests].count("/api/query") == 4  # three refusals, then the answer


def test_a_server_busy_beyond_the_bound_is_given_up_with_a_note(tmp_path, runtime, monkeypatch):
    monkeypatch.setattr(client, "BUSY_WAIT_S", 0.5)
    index = tmp_path / "index"
    index.mkdir()

    def respond(method, path, body):
        if path == "/health":
            return 200, {}, health_for(index)
        return 429, {"Retry-After": "0.2"}, {"error": "busy"}

    with FakeServer(respond, KEY) as fake:
        advertise(index, fake.url, KEY)
        notes: list[str] = []
        assert ask(index, notes) is None
    assert len(notes) == 1 and "stayed busy" in notes[0]
    assert 2 <= [path for _, path, _ in fake.requests].count("/api/query") <= 5  # it did wait, and not forever


def test_the_default_queue_fits_a_dozen_parallel_queries():
    from bt_search.cli.app import serve

    assert config.DEFAULT_MAX_QUEUE >= 12
    assert (
        ServeSettings(index_dir=None, model=None, device="cpu", precision="auto").max_queue == config.DEFAULT_MAX_QUEUE
    )
    default = inspect.signature(serve).parameters["max_queue"].default.default  # the typer OptionInfo's
    assert default == config.DEFAULT_MAX_QUEUE


def test_parallel_clients_beyond_the_queue_all_get_served_answers(engine, tmp_path, runtime, monkeypatch):
    """The server refuses what does not fit its queue (429, Retry-After); every client waits its turn."""
    index = build_index(engine, tmp_path, "index", range(300, 306))
    service = service_for(index, engine)
    search, refused = service.search, []

    def slow_search(*args, **kwargs):
        import time

        time.sleep(0.3)  # long enough that 8 clients at once overflow a queue of 2
        return search(*args, **kwargs)

    monkeypatch.setattr(service, "search", slow_search)

    def make_app(port):
        app = build_app(service, allowed_hosts=allowed_hosts("127.0.0.1", port), token=None, max_queue=2, key=KEY)
        inner = app.app

        async def counting(scope, receive, send):  # count the 429s the clients had to wait through
            async def watch(message):
                if message["type"] == "http.response.start" and message["status"] == 429:
                    refused.append(dict(message["headers"]).get(b"retry-after"))
                await send(message)

            await inner(scope, receive, watch)

        app.app = counting
        return app

    with InProcessServer(make_app) as server:
        advertise(index, server.url, KEY)
        notes: list[str] = []
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: ask(index, notes, f"figure {i}"), range(8)))
    assert notes == [], notes
    assert all(answer is not None and len(answer[0]) == 2 for answer in answers)
    assert refused and set(refused) == {b"1"}  # the queue did overflow, and each refusal said when to come back
