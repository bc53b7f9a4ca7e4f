"""The ASGI app: JSON API, thumbnails and the search page, behind a guard (Host, token, methods, headers).

Model work runs in one worker thread at a time; at most `max_queue` requests may wait for it, the next
ones get 429 at once. Answers already in the result cache skip the queue.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bt_search.errors import BtSearchError, UsageError
from bt_search.serve.page import CSP, PAGE_CSS, render_page
from bt_search.serve.service import Answer, Service, thumb_key

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


def build_app(service: Service, *, allowed_hosts: set[str], token: str | None, max_queue: int) -> Starlette:
    gate = Gate(max_queue)

    async def answer(kind: str, queries: list[str], options: dict[str, Any], work: Callable[[], Answer]) -> Answer:
        cached = service.cached(kind, tuple(queries), options)
        if cached is not None:
            return cached
        async with gate.slot():
            return await anyio.to_thread.run_sync(work, limiter=gate.model)

    async def health(request: Request) -> Response:
        await anyio.to_thread.run_sync(
            service.refresh, limiter=gate.thumbs
        )  # counts and generation of the newest index
        return json_response(service.health())

    async def api_search(request: Request) -> Response:
        params = request.query_params
        queries = params.getlist("q")
        options = _options(params, rerank=True)
        result = await answer("search", queries, options, lambda: service.search(queries, options))
        return json_response(_hits_json(result))

    async def api_query(request: Request) -> Response:
        body = await _json_body(request)
        queries, options = body.get("queries"), body.get("options") or {}
        if not isinstance(options, dict):
            raise UsageError("options must be an object")
        result = await answer("search", queries, options, lambda: service.search(queries, options))
        return json_response(result.as_json())

    async def api_similar(request: Request) -> Response:
        if request.method == "POST":
            body = await _json_body(request)
            path, options = body.get("path"), body.get("options") or {}
        else:
            path = request.query_params.get("path") or service.path_for_key(request.query_params.get("key", ""))
            options = _options(request.query_params, rerank=False)
        if not isinstance(path, str) or not isinstance(options, dict):
            raise Refused(404, "not an indexed image")
        result = await answer("similar", [path], options, lambda: service.similar(path, options))
        return json_response(result.as_json() if request.method == "POST" else _hits_json(result))

    async def thumbnail(request: Request) -> Response:
        key = request.path_params["key"]
        jpeg = await anyio.to_thread.run_sync(service.thumbnail, key, limiter=gate.thumbs)
        if jpeg is None:
            raise Refused(404, "no such thumbnail")
        return Response(jpeg, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    async def page(request: Request) -> Response:
        params = request.query_params
        if token and params.get("token"):  # the link printed at start-up: keep the token in a cookie, not the URL
            response = RedirectResponse("/", 303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        query, similar = params.get("q", "").strip(), params.get("similar", "")
        rerank = params.get("rerank", "true") != "false"
        generation = service.reader.generation
        try:
            if similar:
                path = service.path_for_key(similar)
                if path is None:
                    raise Refused(404, "that image is not among this server's results; search again")
                result = await answer("similar", [path], {"top_k": 24}, lambda: service.similar(path, {"top_k": 24}))
                heading = f"Images similar to {path}"
            elif query:
                options = {"top_k": 24, "shortlist": 48, "rerank": rerank}
                result = await answer("search", [query], options, lambda: service.search([query], options))
                heading = f"Results for “{query}”"
            else:
                return _html(render_page())
        except (Refused, BtSearchError, LookupError) as err:
            status = err.status if isinstance(err, Refused) else 400
            return _html(render_page(query=query, rerank=rerank, error=str(err)), status)
        return _html(
            render_page(query=query, rerank=rerank, heading=heading, hits=result.results[0], generation=generation)
        )

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
    ]
    handlers = {Refused: _refused, LookupError: _not_found, UsageError: _bad_request, BtSearchError: _unavailable}
    app = Starlette(routes=routes, lifespan=_lifespan(gate), exception_handlers=handlers)
    return Guard(app, allowed_hosts=allowed_hosts, token=token)


class Gate:
    """Admission to the model thread: at most `max_queue` waiting or running; thumbnails have their own pool."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.waiting = 0
        self.model: anyio.CapacityLimiter | None = None
        self.thumbs: anyio.CapacityLimiter | None = None

    @asynccontextmanager
    async def slot(self):
        if self.waiting >= self.max_queue:
            raise Refused(429, "busy: too many searches waiting; retry shortly", {"retry-after": "1"})
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1


def _lifespan(gate: Gate):
    @asynccontextmanager
    async def lifespan(app):
        gate.model, gate.thumbs = anyio.CapacityLimiter(1), anyio.CapacityLimiter(2)
        yield

    return lifespan


class Guard:
    """Pure ASGI wrapper: Host allow-list (DNS rebinding), token, typed errors -> status, security headers."""

    def __init__(self, app, *, allowed_hosts: set[str], token: str | None):
        self.app, self.allowed_hosts, self.token = app, allowed_hosts, token
        self.last_request = time.monotonic()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.last_request = time.monotonic()
        headers = dict(scope["headers"])
        refusal = self._refusal(scope, headers)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
                message["headers"] = _dedupe(message["headers"])
            await send(message)

        if refusal is not None:
            return await _refused(None, refusal)(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope, headers: dict[bytes, bytes]) -> Refused | None:
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.allowed_hosts:
            return Refused(421, "unexpected Host header (this server answers its own address only)")
        if self.token and not self._has_token(scope, headers):
            return Refused(401, "a token is needed: Authorization: Bearer TOKEN, or open /?token=TOKEN once")
        return None

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


def _unavailable(request, err: BtSearchError) -> Response:
    """The index went away or changed model under the server: nothing a retry of the same request fixes soon."""
    return json_response({"error": str(err)}, 503)


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


def _hits_json(result: Answer) -> dict[str, Any]:
    """GET answers: the hits as `--format jsonl` has them, each one's thumbnail URL, the files left out."""
    data = result.as_json()
    hits = [hit for hits in data["results"] for hit in hits]
    return {
        "hits": hits,
        "thumbnails": [f"/thumb/{thumb_key(hit['path'])}" for hit in hits],
        "missing": data["missing"],
    }


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
