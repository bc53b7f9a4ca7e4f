"""`/api/search` and `/api/query` as a stream of JSON lines (NDJSON), opt-in with `?stream=1` or
`Accept: application/x-ndjson`.

One line per update as the search improves, then the answer: `{"partial": "shortlist", ...}` as soon as the
cosine shortlist is known, `{"partial": "reranking", ...}` after each rerank chunk (reranked candidates best
first, those still waiting after them with `itm` null), and last the very object the plain request answers
(a partial line is that object's shape less the files left out and the notes). A cached answer is that last
line alone. An error once the stream has begun is a last line `{"error": ...}` (the status is already 200); one
found before (a bad request, too much work, a busy server) keeps its status, as the plain request's. A client
that goes away cancels the search before its next rerank chunk.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from starlette.responses import StreamingResponse

from bt_search.errors import BtSearchError
from bt_search.search.hits import Hit
from bt_search.serve.discovery import NDJSON, is_ndjson

Results = list[list[Hit]]


def wants_stream(params, headers) -> bool:
    """`stream=1` (true, yes) in the query string, or NDJSON among the accepted types."""
    if "stream" in params:
        return params["stream"].lower() not in ("", "0", "false", "no")
    return any(is_ndjson(part) for part in headers.get("accept", "").split(","))


def json_line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=True).encode() + b"\n"


def stream_response(
    search: Callable[[Callable[[Results], None], Callable[[], bool]], Any],
    *,
    cached: Any | None,
    partial_json: Callable[[Results], dict[str, Any]],
    answer_json: Callable[[Any], dict[str, Any]],
    admitted,
    limiter,
) -> StreamingResponse:
    """Stream `search(on_update, cancelled) -> Answer`, run in a worker thread under `limiter` (the one model
    thread) inside `admitted()` (the wait queue's slot). `cached`: an answer already known (sent alone)."""
    return StreamingResponse(_lines(search, cached, partial_json, answer_json, admitted, limiter), media_type=NDJSON)


async def _lines(search, cached, partial_json, answer_json, admitted, limiter) -> AsyncIterator[bytes]:
    if cached is not None:
        yield json_line(answer_json(cached))
        return
    send, receive = anyio.create_memory_object_stream[bytes](math.inf)
    gone = threading.Event()  # the client left: the search stops before its next chunk
    outcome: dict[str, Any] = {}

    def on_update(results: Results) -> None:
        stage = "reranking" if outcome.get("updates") else "shortlist"
        outcome["updates"] = outcome.get("updates", 0) + 1
        line = json_line({"partial": stage, **partial_json(results)})
        anyio.from_thread.run_sync(send.send_nowait, line)

    async def run() -> None:
        try:
            async with admitted():
                outcome["answer"] = await anyio.to_thread.run_sync(
                    lambda: search(on_update, gone.is_set), limiter=limiter
                )
        except Exception as err:  # noqa: BLE001 - reported as the stream's last line
            outcome["error"] = err
        finally:
            send.close()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        try:
            async with receive:
                async for line in receive:
                    yield line
        finally:
            gone.set()  # the search (still running if the client left) stops before its next chunk
    if "answer" in outcome:
        yield json_line(answer_json(outcome["answer"]))
    else:
        yield json_line({"error": _message(outcome.get("error"))})


def _message(err: BaseException | None) -> str:
    if isinstance(err, BtSearchError):
        return str(err)
    if isinstance(err, LookupError):
        return str(err).strip("'\"")
    message = getattr(err, "message", None)  # the app's Refused (busy)
    return message if isinstance(message, str) else f"internal error ({type(err).__name__})"
