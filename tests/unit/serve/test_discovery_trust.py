"""Discovery records are trusted only when this user wrote them (0600, loopback, with a key), and answers
only when they carry the proof of that key: a planted record or a process squatting on a stopped server's
port never gets the query text, and its paths are never printed."""

from __future__ import annotations

import json
import os

import pytest

from bt_search.serve.app import build_app
from bt_search.serve.discovery import FILE_NAME, read_server_records, server_files
from bt_search.serve.runner import allowed_hosts
from tests.support.serve import (
    FakeServer,
    InProcessServer,
    advertise,
    ask_server,
    build_index,
    health_for,
    service_for,
)

KEY = "a" * 64
SECRET = "/home/victim/.ssh/id_rsa"


@pytest.fixture
def index(tmp_path):
    directory = tmp_path / "shared-index"
    directory.mkdir()
    return directory


def ask(index, notes: list[str]):
    return ask_server(index, ["my private query"], notes, top_k=1, shortlist=4)


def hostile(index):
    """A server that answers like ours and returns a file that is not in the index."""
    hit = {"query": "q", "rank": 1, "path": SECRET, "score": 1.0, "similarity": 1.0, "shortlist_rank": 1}

    def respond(method, path, body):
        if path == "/health":
            return 200, {}, health_for(index)
        return 200, {}, {"results": [[hit]], "missing": []}

    return respond


def plant(place, record: dict, mode: int = 0o600) -> None:
    place.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(place, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.write(fd, json.dumps(record).encode())
    os.close(fd)
    os.chmod(place, mode)


def test_a_record_planted_in_a_shared_index_directory_is_not_trusted(index, runtime):
    with FakeServer(hostile(index)) as fake:
        plant(index / FILE_NAME, {"url": fake.url, "pid": 1, "index": str(index)}, mode=0o644)
        notes: list[str] = []
        assert ask(index, notes) is None
    assert fake.requests == []  # not even asked for /health: the query text never left
    assert len(notes) == 1 and "ignored" in notes[0] and "mode 644" in notes[0]


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"url": "http://203.0.113.5:8765", "key": KEY}, "not a loopback address"),
        ({"url": "http://evil.example:8765", "key": KEY}, "not a loopback address"),
        ({"url": "http://127.0.0.1:8765"}, "no server key"),
        (["not", "a", "record"], "not a server record"),
    ],
)
def test_records_that_do_not_name_a_keyed_loopback_server_are_ignored(index, runtime, record, reason):
    plant(server_files(index)[0], record)
    notes: list[str] = []
    assert read_server_records(index, on_ignored=notes.append) == []
    assert len(notes) == 1 and reason in notes[0]


def test_records_of_another_user_and_non_files_are_ignored(index, runtime):
    place = server_files(index)[0]
    place.parent.mkdir(mode=0o700)
    os.mkfifo(place, 0o600)  # would block a plain open() forever
    notes: list[str] = []
    assert read_server_records(index, on_ignored=notes.append) == [] and "not a regular file" in notes[0]
    place.unlink()
    if os.getuid() != 0:
        pytest.skip("giving a file to another user needs root")
    plant(place, {"url": "http://127.0.0.1:8765", "key": KEY})
    os.chown(place, 4242, -1)
    notes.clear()
    assert read_server_records(index, on_ignored=notes.append) == [] and "another user" in notes[0]


def test_a_process_without_the_key_gets_no_query_and_its_paths_are_not_printed(index, runtime):
    """As when another local user takes over the port of a stopped server whose record is still there."""
    with FakeServer(hostile(index), key="the squatter does not know the key") as squatter:
        advertise(index, squatter.url, KEY)
        notes: list[str] = []
        assert ask(index, notes) is None
    assert [path for _, path, _ in squatter.requests] == ["/health"]
    assert not any(b"my private query" in body for _, _, body in squatter.requests)
    assert len(notes) == 1 and "not the server that wrote the discovery record" in notes[0]


def test_the_runtime_directory_record_comes_first(index, runtime):
    good_hit = {"query": "q", "rank": 1, "path": "/photos/a.png", "score": 1.0, "similarity": 1.0, "shortlist_rank": 1}

    def good(method, path, body):
        if path == "/health":
            return 200, {}, health_for(index)
        return 200, {}, {"results": [[good_hit]], "missing": []}

    with FakeServer(good, KEY) as ours, FakeServer(hostile(index), KEY) as other:
        plant(index / FILE_NAME, {"url": other.url, "pid": 1, "index": str(index), "key": KEY})
        advertise(index, ours.url, KEY)
        assert server_files(index)[0].parent.parent == runtime
        notes: list[str] = []
        results = ask(index, notes)
    assert [hit.path for hit in results[0]] == ["/photos/a.png"] and other.requests == [] and notes == []


def test_the_real_server_proves_its_answers(engine, tmp_path, runtime):
    index = build_index(engine, tmp_path, "index", range(400, 405))
    service = service_for(index, engine)

    def make_app(port):
        return build_app(service, allowed_hosts=allowed_hosts("127.0.0.1", port), token=None, max_queue=4, key=KEY)

    with InProcessServer(make_app) as server:
        advertise(index, server.url, KEY)
        notes: list[str] = []
        results = ask(index, notes)
        assert notes == [] and results is not None and len(results[0]) == 1
        advertise(index, server.url, "b" * 64)  # a record whose key is not this server's
        assert ask(index, notes) is None and "not the server" in notes[0]
