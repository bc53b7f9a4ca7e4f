"""The server's parts in-process: the search.py hooks, the bounded caches, settings checks and the ASGI guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from bt_search.errors import UsageError
from bt_search.indexing.run import index_paths
from bt_search.search.searcher import Searcher
from bt_search.serve.app import build_app
from bt_search.serve.caches import SmallLRU, StateLRU
from bt_search.serve.runner import allowed_hosts, check_exposure, parse_duration
from bt_search.serve.service import Service
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.images import noise_image

QUERIES = ["a red circle left of a blue square", "two green triangles"]
TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def index_dir(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-units")
    (root / "photos").mkdir()
    for i in range(10):
        noise_image(i + 500, 64, 64 + i).save(root / "photos" / f"img{i}.png")
    with IndexWriter.open(root / "index", IndexIdentity.of(engine)) as writer:
        index_paths([str(root / "photos")], writer, engine, workers=0, batch_size=4)
    return root / "index"


def counting_vision(engine, monkeypatch) -> list[int]:
    seen: list[int] = []
    original = engine.vision_states
    monkeypatch.setattr(engine, "vision_states", lambda pixels: seen.append(len(pixels)) or original(pixels))
    return seen


def test_state_store_gives_identical_results_and_skips_the_vision_tower(engine, index_dir, monkeypatch):
    reader = IndexReader.open(index_dir)
    plain = Searcher(reader, engine, batch_size=3).search(QUERIES, top_k=5, shortlist=6)
    store = StateLRU(64 << 20)
    first = Searcher(reader, engine, batch_size=3, state_store=store).search(QUERIES, top_k=5, shortlist=6)
    seen = counting_vision(engine, monkeypatch)
    again = Searcher(reader, engine, batch_size=3, state_store=store).search(QUERIES[::-1], top_k=5, shortlist=6)
    assert first == plain  # Hit equality: same paths, same float scores
    # reversed queries fuse their candidates in other batch groupings: same ranking, scores to float rounding
    assert [[h.path for h in hits] for hits in again] == [[h.path for h in hits] for hits in plain[::-1]]
    assert np.allclose(
        [[h.score for h in hits] for hits in again], [[h.score for h in hits] for hits in plain[::-1]], atol=1e-6
    )
    assert seen == []  # every candidate's states came from the store
    assert len(store) == len({int(r) for r in reader.search(engine.encode_texts(QUERIES), 6)[1].ravel()})


def test_progress_counts_candidates_to_the_end(engine, index_dir):
    reader = IndexReader.open(index_dir)
    calls: list[tuple[int, int]] = []
    Searcher(reader, engine, batch_size=3, progress=lambda done, total: calls.append((done, total))).search(
        QUERIES, top_k=3, shortlist=6
    )
    rows = reader.search(engine.encode_texts(QUERIES), 6)[1]
    total = rows.size  # candidates, as `shortlist` counts them
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert all(t == total for _, t in calls) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_state_lru_keeps_the_byte_budget_and_evicts_least_recent():
    state = torch.zeros(4, 8, 16)  # 2 KiB
    lru = StateLRU(budget_bytes=3 * state.numel() * 4)
    batch = torch.arange(4 * 512, dtype=torch.float32).reshape(4, 4, 8, 16)
    for i in range(3):
        lru.put(f"p{i}", batch[i])
    assert lru.get("p0") is not None  # p0 is now the most recent
    lru.put("p3", batch[3])
    assert lru.get("p1") is None and [lru.get(p) is not None for p in ("p0", "p2", "p3")] == [True] * 3
    assert lru.used_bytes == 3 * state.numel() * 4
    assert lru.get("p3").untyped_storage().nbytes() == state.numel() * 4  # a copy, not a view of the batch
    assert torch.equal(lru.get("p3"), batch[3])
    lru.put("huge", torch.zeros(1 << 12, 16))  # over the whole budget: not kept, nothing evicted
    assert lru.get("huge") is None and len(lru) == 3


def test_small_lru_capacity():
    lru = SmallLRU(2)
    lru.put("a", 1), lru.put("b", 2), lru.get("a"), lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)


@pytest.mark.parametrize(
    "text, seconds",
    [(None, None), ("0", None), ("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1.5d", 129600.0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "-5m", "10 minutes", "5x"])
def test_parse_duration_refuses_nonsense(text):
    with pytest.raises(UsageError):
        parse_duration(text)


def test_exposure_needs_allow_remote_and_a_long_token():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(host, False, None)
    with pytest.raises(UsageError, match="`allow_remote`"):
        check_exposure("0.0.0.0", False, TOKEN)
    with pytest.raises(UsageError, match="`token`"):
        check_exposure("192.168.1.5", True, None)
    with pytest.raises(UsageError, match="`token`"):
        check_exposure("192.168.1.5", True, "short")
    check_exposure("192.168.1.5", True, TOKEN)


def test_allowed_hosts_are_the_bound_address_only():
    assert allowed_hosts("127.0.0.1", 8765) == {
        "127.0.0.1",
        "localhost",
        "[::1]",
        "127.0.0.1:8765",
        "localhost:8765",
        "[::1]:8765",
    }
    assert allowed_hosts("192.168.1.5", 80) == {"192.168.1.5", "192.168.1.5:80"}


@pytest.fixture(scope="module")
def service(index_dir, tiny_checkpoint):
    return Service.load(index_dir, str(tiny_checkpoint), device="cpu", precision="fp32", state_cache_mb=8, batch_size=4)


def client_for(service, token=None, max_queue=4) -> TestClient:
    app = build_app(service, allowed_hosts=allowed_hosts("127.0.0.1", 8765), token=token, max_queue=max_queue)
    return TestClient(app, base_url="http://127.0.0.1:8765")


def test_api_search_equals_the_library_and_sets_strict_headers(service, index_dir, engine):
    expected = Searcher(IndexReader.open(index_dir), engine).search(["two green triangles"], top_k=3, shortlist=5)[0]
    with client_for(service) as client:
        response = client.get("/api/search", params={"q": "two green triangles", "top_k": 3, "shortlist": 5})
        cross_site = client.get("/api/search", params={"q": "red"}, headers={"Origin": "http://evil.example"})
    assert cross_site.status_code == 403 and not any(name.startswith("access-control-") for name in cross_site.headers)
    assert response.status_code == 200
    assert [(h["path"], h["score"], h["shortlist_rank"]) for h in response.json()["hits"]] == [
        (h.path, h.score, h.shortlist_rank) for h in expected
    ]
    assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none' forbids scripts
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert not any(name.startswith("access-control-") for name in response.headers)  # no CORS


def test_serve_sets_a_passive_openmp_wait_policy_before_torch_loads(index_dir, monkeypatch):
    import subprocess
    import sys

    # In a fresh process (torch is loaded in this one): when serving starts, the policy is set and torch is not
    # loaded yet, so its OpenMP runtime reads the policy.
    code = (
        "import os, sys\n"
        "import bt_search.serve.runner as runner\n"
        "runner.serve_forever = lambda settings, say: print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)\n"
        "app = __import__('bt_search.cli.app', fromlist=['app']).app\n"
        "raise SystemExit(app(['serve', '--index', sys.argv[1]], standalone_mode=False))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", code, str(index_dir)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["PASSIVE", "False"]


def test_token_guard(service):
    with client_for(service, token=TOKEN) as client:
        assert client.get("/health").status_code == 401
        assert client.get("/health", headers={"Authorization": "Bearer wrong-token-0123456"}).status_code == 401
        assert client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        login = client.get("/", params={"token": TOKEN}, follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/"
        assert (
            "httponly" in login.headers["set-cookie"].lower()
            and "samesite=strict" in login.headers["set-cookie"].lower()
        )
        assert client.get("/health").status_code == 200  # the cookie now carries the token


def test_bad_requests_are_refused_with_400_not_500(service):
    with client_for(service) as client:
        assert client.get("/api/search", params={"q": "x" * 1001}).status_code == 413  # too much: the CLI falls back
        assert client.get("/api/search", params={"q": "red", "top_k": "many"}).status_code == 400
        assert client.get("/api/search", params={"q": "red", "top_k": 100000}).status_code == 400
        assert client.get("/api/search").status_code == 400  # no query
        assert client.post("/api/query", json={"queries": ["red"], "options": {"evil": 1}}).status_code == 400
        assert (
            client.post("/api/query", content=b"queries=red", headers={"content-type": "text/plain"}).status_code == 415
        )
        assert (
            client.post(
                "/api/query", content=b"{" + b" " * (2 << 20), headers={"content-type": "application/json"}
            ).status_code
            == 413
        )
        assert client.delete("/api/search").status_code == 405


def test_rerank_bar_appears_only_after_its_delay_and_goes_away():
    import time

    from bt_search.cli.app import _RerankBar

    quick = _RerankBar(delay_s=0.3)
    quick(0, 10), quick(10, 10)
    time.sleep(0.5)
    assert not quick.bar.live.is_started  # finished inside the delay: never drawn
    slow = _RerankBar(delay_s=0.05)
    slow(0, 10)
    time.sleep(0.3)
    assert slow.bar.live.is_started and slow.bar.tasks[0].total == 10
    slow(4, 10), slow(10, 10)
    assert not slow.bar.live.is_started and slow.bar.tasks[0].completed == 10


@pytest.mark.parametrize(
    "server_option, dtype, rerank_dtype, asked, served",
    [
        ("auto", "float32", "bfloat16", "auto", True),
        ("auto", "float32", "bfloat16", "fp32", False),  # an fp32 request must not get a bf16 rerank
        ("auto", "float32", "bfloat16", "bf16", False),  # nor bf16 embeddings
        ("auto", "float32", "float32", "fp32", True),
        ("fp32", "float32", "float32", "auto", False),
        ("bf16", "bfloat16", "bfloat16", "bf16", True),
        ("auto", "float32", "int8", "int8", True),  # auto on a CPU without native bf16 reranks in int8
        ("int8", "float32", "int8", "auto", False),
        ("int8", "float32", "int8", "fp32", False),
        ("auto", "float32", "int8", "fp32", False),
        ("fp32", "float32", "float32", "int8", False),
    ],
)
def test_a_server_answers_only_requests_in_the_precision_it_computes(server_option, dtype, rerank_dtype, asked, served):
    from bt_search.serve.client import canonical_index, mismatch

    health = {
        "index": canonical_index("/data/idx"),
        "model": "/models/bt",
        "device": "cpu",
        "device_option": "auto",
        "dtype": dtype,
        "rerank_dtype": rerank_dtype,
        "precision_option": server_option,
    }
    reason = mismatch(health, "/data/idx", "/models/bt", "auto", asked)
    assert (reason is None) == served, reason
    if not served and server_option == "auto" and asked != "auto":
        assert reason == f"it computes in {dtype} (rerank in {rerank_dtype}), not {asked}"
