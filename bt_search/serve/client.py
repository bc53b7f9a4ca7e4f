"""`bt-search query` through a running server: find it, check it serves the same index and model, ask it.

Standard library only (no torch, transformers, numpy or server stack), so a query through a warm server
costs an interpreter start, light imports (the attach fast path, cli/attach.py) and one HTTP round trip. Any
doubt means None: the caller searches in-process, and the reason is given in one line when a server was
advertised but not used.

A busy server (429, Retry-After) is waited for, up to BUSY_WAIT_S in all: loading the model in-process
costs far more than waiting one's turn. Only a server that is gone, unproven, mismatched or unusable (any
other refusal, 503 without Retry-After) sends the query in-process.
"""

from __future__ import annotations

import hmac
import http.client
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from bt_search.engine.naming import model_name
from bt_search.errors import UsageError
from bt_search.search.hits import Hit, hit_from_json
from bt_search.search.query import IMAGE_QUERY_OPTIONS, QueryRequest
from bt_search.serve.discovery import (
    LINE_PROOFS,
    NDJSON,
    NONCE_HEADER,
    PROOF_HEADER,
    answer_proof,
    canonical_index,
    is_ndjson,
    line_proof,
    read_server_records,
)

HEALTH_TIMEOUT_S = 2.0
SEARCH_TIMEOUT_S = 3600.0  # a large rerank on CPU is slow but legitimate
BUSY_WAIT_S = 120.0  # in all, at a server that keeps answering Retry-After; then the search runs in-process
MAX_RETRY_AFTER_S = 10.0  # one wait, whatever a server asks
_DTYPE_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "int8": "int8"}


class ServerUnusable(Exception):
    """This server cannot answer this request the way an in-process search would."""


class ServerClient:
    """HTTP to one server. With the `key` of its discovery record, every answer must carry the proof for the
    request's fresh nonce, and a query is sent only on a connection whose answers were proven."""

    def __init__(self, url: str, token: str | None = None, key: str | None = None):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ServerUnusable(f"bad server address {url!r}")
        self.url, self.token, self.key = url, token, key
        self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HEALTH_TIMEOUT_S)

    def close(self) -> None:
        self._connection.close()

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def search(
        self, queries: list[str], options: dict[str, Any], on_partial: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """The answer; with `on_partial`, asked as a stream, whose partial lines (the shortlist, then each rerank
        chunk's order) it hears as they arrive."""
        return self._request("POST", "/api/query", {"queries": queries, "options": options}, on_partial)

    def similar(self, path: str, options: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/api/similar", {"path": path, "options": options})

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        on_partial: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """The answer to one request; a busy server's Retry-After is honoured up to BUSY_WAIT_S in all."""
        headers = {"Accept": NDJSON if on_partial else "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=True).encode()
            headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + BUSY_WAIT_S
        while True:
            status, retry_after, answer = self._exchange(method, path, data, headers, on_partial)
            if retry_after is None:
                break
            wait = min(retry_after, deadline - time.monotonic())
            if wait <= 0:
                raise ServerUnusable(f"{self.url} stayed busy for {BUSY_WAIT_S:g} s")
            time.sleep(wait)
        if status == 400:
            raise UsageError(answer.get("error", "bad request"))  # what the same search in-process would raise
        if status != 200:
            raise ServerUnusable(f"{self.url} answered {status}: {answer.get('error', '')}".rstrip(": "))
        return answer

    def _exchange(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str],
        on_partial: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[int, float | None, dict[str, Any]]:
        """(status, seconds its Retry-After asks for or None, JSON object) of one proven exchange; a streamed
        answer's partial lines go to `on_partial`, and its last line is the object returned."""
        if data is not None:
            if self.key and self._connection.sock is None:
                self.health()  # a new connection: the server proves itself before it is told any query
            self._connection.timeout = SEARCH_TIMEOUT_S
            if self._connection.sock is not None:
                self._connection.sock.settimeout(SEARCH_TIMEOUT_S)
        nonce = secrets.token_hex(16)
        try:
            self._connection.request(method, path, data, {**headers, NONCE_HEADER: nonce})
            response = self._connection.getresponse()
            streamed = is_ndjson(response.getheader("content-type") or "")
            if on_partial is not None and response.status == 200 and streamed:
                return 200, None, self._streamed_answer(response, nonce, on_partial)
            payload = response.read()
        except (OSError, http.client.HTTPException) as err:
            raise ServerUnusable(f"no answer from {self.url}: {err}") from None
        if self.key is not None:
            proof = response.getheader(PROOF_HEADER) or ""
            if not hmac.compare_digest(proof, answer_proof(self.key, nonce, payload)):
                raise self._unproven()
        answer = _json_object(payload, f"{self.url} answered {response.status}")
        return response.status, _retry_after(response.getheader("retry-after")), answer

    def _unproven(self) -> ServerUnusable:
        return ServerUnusable(f"{self.url} is not the server that wrote the discovery record (no valid proof)")

    def _streamed_answer(self, response, nonce: str, on_partial: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """The last line of an NDJSON answer, each line proven (discovery.line_proof) before it is used."""
        proven = response.getheader(PROOF_HEADER) == LINE_PROOFS
        if self.key is not None and not proven:
            raise self._unproven()
        for number, raw in enumerate(iter(response.readline, b"")):
            line = raw.rstrip(b"\n")
            if proven:
                proof, _, line = line.partition(b" ")
                if self.key is not None and not hmac.compare_digest(
                    proof.decode("latin-1"), line_proof(self.key, nonce, number, line)
                ):
                    raise self._unproven()
            data = _json_object(line, f"{self.url} streamed a line")
            if "partial" in data:
                on_partial(data)
            elif "error" in data:  # after the stream began: the in-process search meets (and reports) it too
                raise ServerUnusable(f"{self.url} failed: {data['error']}")
            else:
                return data
        raise ServerUnusable(f"{self.url} ended its answer early")


def _json_object(data: bytes, source: str) -> dict[str, Any]:
    """`data` as a JSON object; `source` says whose it is (an answer, a streamed line) when it is not one."""
    try:
        parsed = json.loads(data)
    except ValueError:
        raise ServerUnusable(f"{source} without JSON") from None
    if not isinstance(parsed, dict):
        raise ServerUnusable(f"{source} with JSON that is not an object")
    return parsed


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (bounded), or None without one."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 1.0  # an HTTP date: not worth parsing for a local server
    return min(max(seconds, 0.05), MAX_RETRY_AFTER_S)


def mismatch(health: dict[str, Any], index_dir: str, model: str | None, device: str, precision: str) -> str | None:
    """Why this server's answers could differ from an in-process search's (None: they cannot)."""
    if health.get("index") != canonical_index(index_dir):
        return f"it serves another index ({health.get('index')})"
    wanted = model_name(model or health.get("index_model") or "")
    if wanted != health.get("model"):
        return f"it runs model {health.get('model')}, not {wanted}"
    if not _runs_on(health, device):
        return f"it runs on {health.get('device')}, not {device}"
    if precision != health.get("precision_option") and not _computes_in(health, precision):
        return f"it computes in {_computes(health)}, not {precision}"
    return None


def _runs_on(health: dict[str, Any], device: str) -> bool:
    """Whether the server computes where `device` (as asked) would compute in-process. The client cannot
    resolve `auto` (that needs torch), but the server is on this machine and reports what `auto` resolves
    to there (`auto_device`, by loading.resolve_device): `auto` is served by a server running on exactly that."""
    if device == "auto":
        return health.get("device_option") == "auto" or health.get("auto_device") == health.get("device")
    return device == health.get("device")


def _computes(health: dict[str, Any]) -> str:
    dtype = health.get("dtype", "")
    rerank = health.get("rerank_dtype", dtype)
    return dtype if rerank == dtype else f"{dtype} (rerank in {rerank})"


def _computes_in(health: dict[str, Any], precision: str) -> bool:
    """An explicit precision is served only by a server that embeds and reranks in it (int8 is a rerank
    precision: it embeds in fp32, as engine/loading.resolve_dtypes has it)."""
    dtype = health.get("dtype", "")
    rerank = _DTYPE_PRECISION.get(health.get("rerank_dtype", dtype))
    return (_DTYPE_PRECISION.get(dtype), rerank) == (("fp32", "int8") if precision == "int8" else (precision,) * 2)


def served_results(
    index_dir: str,
    *,
    model: str | None,
    device: str,
    precision: str,
    request: QueryRequest,
    on_missing: Callable[[str, str], None],
    notice: Callable[[str], None],
    on_route: Callable[[str], None] | None = None,
    on_update: Callable[[list[list[Hit]]], None] | None = None,
) -> tuple[list[list[Hit]], list[str]] | None:
    """(hits per query, the search's notes) from a running server for `index_dir`, or None: search in-process.
    `notice` hears why an advertised server was not used; `on_route` (a CLI's --verbose) the path otherwise:
    the server's URL, or why no server was asked. `on_update` hears the hits as the search improves (the
    shortlist, then each rerank chunk's order), as run_query's `on_update` does in-process.

    The server answers `request` with the same function as an in-process search (search/query.run_query).
    It is sent as `QueryRequest.for_server` writes it (image paths absolute, shared terms in each line), and
    the hits come back named as the in-process search names them (`QueryRequest.labels`).
    """
    route = on_route or (lambda message: None)
    labels = request.labels()
    reasons: list[str] = []
    records = read_server_records(index_dir, on_ignored=reasons.append)
    for record in records:
        try:
            client = ServerClient(record["url"], record.get("token"), record["key"])
        except ServerUnusable as err:
            reasons.append(str(err))
            continue
        try:
            reason = mismatch(client.health(), index_dir, model, device, precision)
            if reason:
                reasons.append(f"{record['url']}: {reason}")
                continue
            answer = _ask(client, request.for_server(), on_update and (lambda data: on_update(_hits(data, labels))))
        except ServerUnusable as err:
            reasons.append(str(err))
            continue
        finally:
            client.close()
        if answer is None:  # the server may not open this image; in-process can: not worth a notice
            route(f"searching in-process: the server at {record['url']} does not open this image")
            return None
        route(f"answered by the server at {record['url']}")
        for path, reason in answer["missing"]:
            on_missing(path, reason)
        return _hits(answer, labels), answer.get("notes", [])
    if reasons:
        notice(f"server not used ({reasons[-1]}); searching in-process")
    else:
        route(f"searching in-process: no server is running for the index {canonical_index(index_dir)}")
    return None


def _hits(answer: dict[str, Any], labels: list[str]) -> list[list[Hit]]:
    """An answer's (or a partial line's) results, named as the in-process search names them."""
    return [[hit_from_json({**hit, "query": label}) for hit in hits] for hits, label in zip(answer["results"], labels)]


def _ask(
    client: ServerClient, request: QueryRequest, on_partial: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any] | None:
    """The server's answer to `request` (as for_server wrote it); None when it will not open an image of it.
    A text search with `on_partial` is asked as a stream (an image search has no rerank to wait for)."""
    options = {name: value for name, value in _wire(request).items() if name not in ("queries", "image")}
    try:
        if request.image is None:
            return client.search(list(request.queries), options, on_partial)
        return client.similar(request.image, {name: options[name] for name in IMAGE_QUERY_OPTIONS})
    except ServerUnusable as err:
        if " 404" in str(err):
            return None
        raise


def _wire(request: QueryRequest) -> dict[str, Any]:
    """The request's fields as JSON values (tuples as lists)."""
    return {name: list(value) if isinstance(value, tuple) else value for name, value in vars(request).items()}
