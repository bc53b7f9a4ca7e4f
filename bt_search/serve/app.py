"""The ASGI app: JSON API, thumbnails and the search page, behind a guard (Host, origin, token, headers).

Model work runs in one worker thread at a time; at most `max_queue` requests may wait for it, the next
ones get 429 with Retry-After at once. Answers already in the result cache skip the queue. When the server
stops, a search still running after uvicorn's grace period is cancelled between rerank chunks.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bt_search.errors import BtSearchError, UsageError, WorkLimitError
from bt_search.serve.discovery import LINE_PROOFS, NONCE_HEADER, PROOF_HEADER, answer_proof, is_ndjson, line_proof
from bt_search.serve.page import CSP, PAGE_CSS, render_page
from bt_search.serve.service import Answer, Service, thumb_key
from bt_search.serve.stream import stream_response, wants_stream

MAX_BODY_BYTES = 1 << 20
TOKEN_COOKIE = "bt_search_token"
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # ensure_ascii: file names that are not UTF-8 travel as \udcXX escapes, which json.loads restores.
    return Response(json.dumps(data, ensure_ascii=True), status, headers, media_type="application/json")


def build_app(
    service: Service,
    *,
    allowed_hosts: set[str],
    token: str | None,
    max_queue: int,
    key: str | None = None,
    idle_states: bool = False,
) -> Guard:
    """`key`: the secret of the discovery record; answers to a request with a nonce then carry their proof.
    `idle_states`: compute states for recent queries' unreranked candidates while idle (serve/idle.py)."""
    gate = Gate(max_queue)
    idle = None
    if idle_states:
        from bt_search.search.rerank_budget import default_shortlist
        from bt_search.serve.idle import IdleStates

        idle = IdleStates(service, idle_seconds=lambda: guard.idle_seconds())
        service.on_unreranked, service.lookahead = idle.offer, default_shortlist(service.engine.device.type)

    async def answer(kind: str, queries: Any, options: Any) -> Answer:
        queries, options = service.check(kind, queries, options)
        cached = service.cached(kind, tuple(queries), options)
        if cached is not None:
            return cached
        if kind == "search":
            work = lambda: service.search(queries, options, cancelled=gate.stopping.is_set)  # noqa: E731
        else:
            work = lambda: service.similar(queries[0], options)  # noqa: E731
        async with gate.slot():
            return await anyio.to_thread.run_sync(work, limiter=gate.model)

    async def health(request: Request) -> Response:
        await anyio.to_thread.run_sync(
            service.refresh, limiter=gate.thumbs
        )  # counts and generation of the newest index
        return json_response(service.health())

    async def api_search(request: Request) -> Response:
        params = request.query_params
        if wants_stream(params, request.headers):
            return streamed("search", params.getlist("q"), _options(params, rerank=True))
        result = await answer("search", params.getlist("q"), _options(params, rerank=True))
        return json_response(_hits_json(result))

    def streamed(kind: str, queries: Any, options: Any, answer_json=_hits_json) -> Response:
        """The search as NDJSON lines (serve/stream.py): checked, and refused when busy, before the stream starts.
        Each partial line is `answer_json` of the hits so far, less the files left out and the notes."""
        queries, options = service.check(kind, queries, options)
        cached = service.cached(kind, tuple(queries), options)
        if cached is None and gate.waiting >= gate.max_queue:
            raise Refused(429, "busy: too many searches waiting; retry shortly", {"retry-after": "1"})

        def search(on_update, gone):
            cancelled = lambda: gate.stopping.is_set() or gone()  # noqa: E731
            return service.search(queries, options, cancelled=cancelled, on_update=on_update)

        def partial(results: list) -> dict[str, Any]:
            return {k: v for k, v in answer_json(Answer(results)).items() if k not in ("missing", "notes")}

        return stream_response(
            search, cached=cached, partial_json=partial, answer_json=answer_json, admitted=gate.slot, limiter=gate.model
        )

    async def api_query(request: Request) -> Response:
        queries, options = _fields(await _json_body(request), "queries")
        if wants_stream(request.query_params, request.headers):  # the CLI's terminal view (cli/live.py)
            return streamed("search", queries, options, Answer.as_json)
        return json_response((await answer("search", queries, options)).as_json())

    async def api_similar(request: Request) -> Response:
        if request.method == "POST":
            path, options = _fields(await _json_body(request), "path")
        else:
            path = request.query_params.get("path") or service.path_for_key(request.query_params.get("key", ""))
            options = _options(request.query_params, rerank=False)
            if path is None:
                raise Refused(404, "not an indexed image")
        result = await answer("similar", [path], options)
        return json_response(result.as_json() if request.method == "POST" else _hits_json(result))

    async def thumbnail(request: Request) -> Response:
        return await _jpeg(service.thumbnail, request.path_params["key"], "no such thumbnail")

    async def full_image(request: Request) -> Response:
        return await _jpeg(service.full_image, request.path_params["key"], "no such image")

    async def _jpeg(make, key: str, missing: str) -> Response:
        jpeg = await anyio.to_thread.run_sync(make, key, limiter=gate.thumbs)
        if jpeg is None:
            raise Refused(404, missing)
        return Response(jpeg, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    async def page(request: Request) -> Response:
        params = request.query_params
        if token and params.get("token"):  # the link printed at start-up: keep the token in a cookie, not the URL
            response = RedirectResponse("/", 303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        await anyio.to_thread.run_sync(service.refresh, limiter=gate.thumbs)  # a removed index: 503, as /health
        query, similar = params.get("q", "").strip(), params.get("similar", "")
        rerank = params.get("rerank", "true") != "false"
        # heatmaps need the rerank's fusion, and cost about one reranked candidate per card: asked for in the form
        explain = rerank and params.get("explain", "false") == "true"
        # the date range and order, as the form sends them (empty inputs: no bound); check_request checks them
        filters = {name: params[name].strip() for name in ("after", "before", "sort") if params.get(name, "").strip()}
        generation = service.reader.generation
        facts = await anyio.to_thread.run_sync(service.page_facts, limiter=gate.thumbs)
        shown = {"query": query, "rerank": rerank, "index": facts, "filters": filters, "explain": explain}
        refresh = ""  # the reranked page's URL while the cosine shortlist is shown first
        try:
            if similar:
                path = service.path_for_key(similar)
                if path is None:
                    raise Refused(404, "that image is not among this server's results; search again")
                result = await answer("similar", [path], {"top_k": 24, **filters})
                heading = f"Images similar to {path}"
            elif query:
                options = {"top_k": 24, "shortlist": 48, "rerank": rerank, "explain": explain, **filters}
                heading = f"Results for “{query}”"
                first = rerank and params.get("ranked") != "1"
                if first and service.cached("search", *_checked(service, query, options)) is None:
                    # the cosine shortlist at once, and the reranked order when it is ready (docs/serve.md)
                    options["rerank"] = options["explain"] = False  # heatmaps come with the reranked page
                    asked = {"explain": "true"} if explain else {}
                    refresh = "/?" + urlencode({"q": query, "rerank": "true", **asked, **filters, "ranked": "1"})
                result = await answer("search", [query], options)
            else:
                return _html(render_page(**shown))
        except (Refused, UsageError, LookupError) as err:  # the index gone or the server stopping: 503 JSON
            status = err.status if isinstance(err, Refused) else 413 if isinstance(err, WorkLimitError) else 400
            return _html(render_page(**shown, error=str(err)), status)
        hits = result.results[0]
        return _html(render_page(**shown, heading=heading, hits=hits, generation=generation, refresh=refresh))

    async def css(request: Request) -> Response:
        return Response(PAGE_CSS, media_type="text/css", headers={"cache-control": "private, max-age=600"})

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/page.css", css, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/api/search", api_search, methods=["GET"]),
        Route("/api/query", api_query, methods=["POST"]),
        Route("/api/similar", api_similar, methods=["GET", "POST"]),
        Route("/thumb/{key:str}", thumbnail, methods=["GET"]),
        Route("/image/{key:str}", full_image, methods=["GET"]),
    ]
    handlers = {
        Refused: _refused,
        LookupError: _not_found,
        WorkLimitError: _too_much_work,
        UsageError: _bad_request,
        BtSearchError: _unavailable,
        Exception: _internal_error,
    }
    app = Starlette(routes=routes, lifespan=_lifespan(gate, idle), exception_handlers=handlers)
    guard = Guard(app, allowed_hosts=allowed_hosts, token=token, key=key)
    guard.idle_states = idle
    return guard


class Gate:
    """Admission to the model thread: at most `max_queue` waiting or running; thumbnails have their own pool.
    `stopping` is set once uvicorn has stopped waiting for requests: running searches then end."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.waiting = 0
        self.model: anyio.CapacityLimiter | None = None
        self.thumbs: anyio.CapacityLimiter | None = None
        self.stopping = threading.Event()

    @asynccontextmanager
    async def slot(self):
        if self.waiting >= self.max_queue:
            raise Refused(429, "busy: too many searches waiting; retry shortly", {"retry-after": "1"})
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1


def _lifespan(gate: Gate, idle=None):
    @asynccontextmanager
    async def lifespan(app):
        gate.model, gate.thumbs = anyio.CapacityLimiter(1), anyio.CapacityLimiter(2)
        gate.stopping.clear()
        if idle is not None:
            idle.start()
        yield
        # uvicorn runs this after its graceful wait (in-flight requests finished or their tasks cancelled); a
        # cancelled task still waits for its worker thread, so tell a running search to end now.
        gate.stopping.set()
        if idle is not None:
            await anyio.to_thread.run_sync(idle.stop)

    return lifespan


class Guard:
    """Pure ASGI wrapper: Host allow-list (DNS rebinding), cross-site refusal, token, typed errors -> status,
    security headers, answer proofs, and the count of requests in flight (the idle timeout reads it)."""

    def __init__(self, app, *, allowed_hosts: set[str], token: str | None, key: str | None = None):
        self.app, self.allowed_hosts, self.token, self.key = app, allowed_hosts, token, key
        self.in_flight = 0
        self.last_request = time.monotonic()  # when the last request ended (or the server started)
        self.idle_states = None  # serve/idle.IdleStates when `idle_states` is on

    def idle_seconds(self) -> float:
        """Seconds without a request in flight."""
        return 0.0 if self.in_flight else time.monotonic() - self.last_request

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.in_flight += 1
        try:
            await self._serve(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.last_request = time.monotonic()

    async def _serve(self, scope, receive, send) -> None:
        headers = dict(scope["headers"])
        refusal = self._refusal(scope, headers)
        nonce = headers.get(NONCE_HEADER.encode())
        held: list[dict] = []  # the proof covers the whole body: the start and body messages wait for it
        lines: _ProvenLines | None = None  # a stream is not held: each of its lines is proven alone

        async def send_with_headers(message) -> None:
            nonlocal lines
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
                message["headers"] = _dedupe(message["headers"])
                if nonce is not None and self.key and _is_stream(message["headers"]):
                    lines = _ProvenLines(self.key, nonce.decode("latin-1"))
                    message["headers"] = [*message["headers"], (PROOF_HEADER.encode(), LINE_PROOFS.encode())]
                elif nonce is not None and self.key:
                    held.append(message)
                    return
            elif message["type"] == "http.response.body" and lines is not None:
                message = {**message, "body": lines.proven(message.get("body", b""), message.get("more_body", False))}
            elif message["type"] == "http.response.body" and held:
                held.append(message)
                if message.get("more_body"):
                    return
                start, body = held[0], b"".join(m.get("body", b"") for m in held[1:])
                proof = answer_proof(self.key, nonce.decode("latin-1"), body)
                await send({**start, "headers": [*start["headers"], (PROOF_HEADER.encode(), proof.encode())]})
                message = {"type": "http.response.body", "body": body}
            await send(message)

        if refusal is not None:
            return await _refused(None, refusal)(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope, headers: dict[bytes, bytes]) -> Refused | None:
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.allowed_hosts:
            return Refused(421, "unexpected Host header (this server answers its own address only)")
        if self._cross_site(headers):
            return Refused(403, "cross-site request refused: open this server's own page (or use its API directly)")
        if self.token and not self._has_token(scope, headers):
            return Refused(401, "a token is needed: Authorization: Bearer TOKEN, or open /?token=TOKEN once")
        return None

    def _cross_site(self, headers: dict[bytes, bytes]) -> bool:
        """Whether a browser says another site sent this request (Sec-Fetch-Site, or an Origin that is not ours).
        Other clients, the CLI's among them, send neither header."""
        site = headers.get(b"sec-fetch-site", b"same-origin").decode("latin-1").lower()
        if site not in ("same-origin", "none"):  # "none": typed, bookmarked, opened from another program
            return True
        origin = headers.get(b"origin")
        if origin is None:
            return False
        scheme, _, host = origin.decode("latin-1").lower().partition("://")
        return scheme not in ("http", "https") or host not in self.allowed_hosts

    def _has_token(self, scope, headers: dict[bytes, bytes]) -> bool:
        offered = [headers.get(b"authorization", b"").decode("latin-1").removeprefix("Bearer ").strip()]
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE:
                offered.append(value)
        if scope["path"] == "/":
            query = scope.get("query_string", b"").decode("latin-1")
            offered += [p.removeprefix("token=") for p in query.split("&") if p.startswith("token=")]
        return any(secrets.compare_digest(o.encode(), self.token.encode()) for o in offered if o)


def _refused(request, err: Refused) -> Response:
    return json_response({"error": err.message}, err.status, err.headers)


def _not_found(request, err: LookupError) -> Response:
    return json_response({"error": str(err).strip("'\"")}, 404)


def _bad_request(request, err: UsageError) -> Response:
    return json_response({"error": str(err)}, 400)


def _too_much_work(request, err: WorkLimitError) -> Response:
    return json_response({"error": str(err)}, 413)


def _unavailable(request, err: BtSearchError) -> Response:
    """The index went away or changed model under the server, or it is stopping: no retry of the same request
    fixes that soon (no Retry-After), so a client searches in-process."""
    return json_response({"error": str(err)}, 503)


def _internal_error(request, err: Exception) -> Response:
    """A bug: JSON like every other answer, no traceback to the client (uvicorn logs it)."""
    return json_response({"error": f"internal error ({type(err).__name__})"}, 500)


def _dedupe(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Our security headers win; the route's own cache-control wins over the default no-store."""
    seen: dict[bytes, bytes] = {}
    for name, value in headers:
        if name.lower() == b"cache-control" and name.lower() in seen:
            continue
        seen[name.lower()] = value
    return list(seen.items())


def _options(params, *, rerank: bool) -> dict[str, Any]:
    """Typed search options from query-string parameters."""
    options: dict[str, Any] = {}
    try:
        for name in ("top_k", "shortlist"):
            if name in params:
                options[name] = int(params[name])
        if "threshold" in params:
            options["threshold"] = float(params["threshold"])
    except ValueError:
        raise UsageError("top_k and shortlist must be integers, threshold a number") from None
    if rerank and "rerank" in params:
        options["rerank"] = params["rerank"].lower() not in ("false", "0", "no")
    if "under" in params:
        options["under"] = params["under"]
    return options


def _checked(service: Service, query: str, options: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The page's search as the result cache keys it."""
    queries, options = service.check("search", [query], options)
    return tuple(queries), options


def _is_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"content-type" and is_ndjson(value.decode("latin-1")) for name, value in headers)


class _ProvenLines:
    """A streamed answer's body, each line prefixed with its proof and a space (discovery.line_proof)."""

    def __init__(self, key: str, nonce: str):
        self.key, self.nonce, self.count, self.pending = key, nonce, 0, b""

    def proven(self, body: bytes, more: bool) -> bytes:
        """The complete lines of what has come so far (all of it at the end), proven."""
        *complete, self.pending = (self.pending + body).split(b"\n")
        if not more and self.pending:
            complete, self.pending = [*complete, self.pending], b""
        out = []
        for line in complete:
            out.append(line_proof(self.key, self.nonce, self.count, line).encode() + b" " + line + b"\n")
            self.count += 1
        return b"".join(out)


def _hits_json(result: Answer) -> dict[str, Any]:
    """GET answers: the hits as `--format jsonl` has them, each one's thumbnail URL, the files left out."""
    data = result.as_json()
    hits = [hit for hits in data["results"] for hit in hits]
    return {
        "hits": hits,
        "thumbnails": [f"/thumb/{thumb_key(hit['path'], hit.get('t'))}" for hit in hits],
        "missing": data["missing"],
    }


def _fields(body: dict[str, Any], subject: str) -> tuple[Any, Any]:
    """(body[subject], body["options"]) of a POST body, which holds nothing else; check_request checks them."""
    unknown = sorted(set(body) - {subject, "options"})
    if unknown:
        raise UsageError(f"unexpected field(s) {', '.join(unknown)}: send {subject!r} and 'options'")
    if subject not in body:
        raise UsageError(f"{subject!r} is missing")
    options = body.get("options")
    return body[subject], {} if options is None else options


async def _json_body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise Refused(415, "send application/json")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Refused(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        raise UsageError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise UsageError("the body must be a JSON object")
    return data


def _html(text: str, status: int = 200) -> Response:
    return Response(text, status, media_type="text/html; charset=utf-8")
