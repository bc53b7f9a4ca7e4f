"""The warm state behind the server: one engine, the current index, and bounded caches.

Model work (text tower, vision tower, fusion) is not thread-safe to interleave usefully on a few cores, so
the app calls `search`/`similar` from one worker thread at a time. `cached` and `thumbnail` are safe from
any thread. The index is re-read when its directory changes and its committed state is another one (a
finished `bt-search index` run, or another index put in its place); every cache is keyed on or cleared
with that state (IndexReader.state_id).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bt_search import __version__
from bt_search.engine.loading import resolve_device
from bt_search.errors import UsageError, WorkLimitError
from bt_search.output.html_sheet import common_folder, make_thumbnail
from bt_search.search.filters import SORTS, parse_day
from bt_search.search.hits import FRAMES, Hit
from bt_search.search.open import check_same_space, open_index, open_searcher
from bt_search.search.query import IMAGE_QUERY_OPTIONS, QueryRequest, run_query
from bt_search.search.rerank_budget import default_shortlist
from bt_search.search.searcher import SCORES, Searcher
from bt_search.serve.caches import SmallLRU, StateLRU
from bt_search.serve.discovery import canonical_index
from bt_search.store import IndexReader

MAX_QUERIES = 256
MAX_QUERY_CHARS = 1_000
MAX_RESULTS = 1_000  # bound on top_k and shortlist
MAX_CANDIDATES = 4_096  # queries x shortlist in one request: the rerank pairs one request may cost
THUMB_PX = 200
FULL_PX = 1600  # the search page's full-size view: a JPEG at most this many pixels a side
SEARCH_DEFAULTS = {
    name: p.default for name, p in inspect.signature(Searcher.search).parameters.items() if p.kind is p.KEYWORD_ONLY
}


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _texts(value: Any) -> bool:
    return type(value) is list and all(type(item) is str and _is_unicode(item) for item in value)


def _is_day(value: str) -> bool:
    try:
        parse_day(value, "day")
    except UsageError:
        return False
    return True


# What a request may set, and what each value must be: Searcher.search's keyword arguments that JSON can
# carry (`where`, an Arrow expression, cannot: `after` and `before` say it), and QueryRequest's terms, dates and
# order. An image query takes the options of Searcher.similar_images and the date filters and order.
OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "top_k": (lambda v: type(v) is int and 1 <= v <= MAX_RESULTS, f"an integer from 1 to {MAX_RESULTS}"),
    "shortlist": (
        lambda v: v is None or (type(v) is int and 1 <= v <= MAX_RESULTS),
        f"null or an integer from 1 to {MAX_RESULTS}",
    ),
    "rerank": (lambda v: type(v) is bool, "true or false"),
    "threshold": (lambda v: v is None or _finite(v), "null or a finite number"),
    "under": (lambda v: v is None or type(v) is str, "null or a folder path"),
    "score": (lambda v: type(v) is str and v in SCORES, f"one of {', '.join(SCORES)}"),
    "rerank_budget": (lambda v: v is None or (_finite(v) and v > 0), "null or a number of seconds > 0"),
    "nots": (lambda v: _texts(v), "a list of strings"),
    "likes": (lambda v: _texts(v), "a list of image paths"),
    "unlikes": (lambda v: _texts(v), "a list of image paths"),
    "after": (lambda v: v is None or (type(v) is str and _is_day(v)), "null or a day as YYYY-MM-DD"),
    "before": (lambda v: v is None or (type(v) is str and _is_day(v)), "null or a day as YYYY-MM-DD"),
    "sort": (lambda v: type(v) is str and v in SORTS, f"one of {', '.join(SORTS)}"),
    "frames": (lambda v: type(v) is str and v in FRAMES, f"one of {', '.join(FRAMES)}"),
    "explain": (lambda v: type(v) is bool, "true or false"),
    "fold": (lambda v: type(v) is bool, "true or false"),
    "min_match": (lambda v: v is None or (_finite(v) and 0 <= v <= 1), "null or a probability from 0 to 1"),
}


@dataclass
class Answer:
    """Hits per query, the files the search had to leave out (path, reason) in the order met, and what the
    search said on the way (rerank estimates, budget cuts), as an in-process search says it on stderr."""

    results: list[list[Hit]]
    missing: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "results": [[dataclasses.asdict(hit) for hit in hits] for hits in self.results],
            "missing": [list(item) for item in self.missing],
            "notes": self.notes,
        }


def thumb_key(path: str, t: float | None = None) -> str:
    """An opaque, URL-safe name for an image path, or a video's frame at `t` seconds (any bytes; never parsed
    back into a path)."""
    name = os.fsencode(path) if t is None else os.fsencode(path) + f"#t={float(t)!r}".encode()
    return hashlib.sha256(name).hexdigest()[:32]


def check_request(kind: str, queries: Any, options: Any, *, shortlist: int) -> tuple[list[str], dict[str, Any]]:
    """A whole "search" (queries) or "similar" ([path]) request, checked in one place before any cache or model
    sees it: UsageError naming what is malformed, WorkLimitError when it asks for more work than one request
    may. Returns the queries and the options with the default `shortlist` filled in (caches key on them)."""
    if not isinstance(options, dict):
        raise UsageError("options must be an object")
    rules = OPTION_RULES if kind == "search" else {name: OPTION_RULES[name] for name in IMAGE_QUERY_OPTIONS}
    unknown = sorted(set(options) - set(rules))
    if unknown:
        raise UsageError(f"unsupported {kind} option(s): {', '.join(map(str, unknown))}")
    for name, value in options.items():
        fits, wanted = rules[name]
        if not fits(value):
            raise UsageError(f"{name} must be {wanted}, not {json.dumps(value)[:40]}")
    if kind == "similar":
        if not (isinstance(queries, list) and len(queries) == 1 and isinstance(queries[0], str)):
            raise UsageError("path must be a string")
        return queries, options  # a path: may hold \udcXX escapes of bytes that are not UTF-8
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise UsageError("queries must be a list of strings")
    if not queries:
        raise UsageError("give at least one query")
    if len(queries) > MAX_QUERIES:
        raise WorkLimitError(f"at most {MAX_QUERIES} queries per request, not {len(queries)}")
    if any(len(q) > MAX_QUERY_CHARS for q in queries):
        raise WorkLimitError(f"a query is longer than {MAX_QUERY_CHARS} characters")
    if not all(_is_unicode(q) for q in queries):
        raise UsageError("a query is not valid Unicode text (it holds a lone surrogate)")
    options = {**options, "shortlist": options.get("shortlist") or shortlist}
    per_query = max(options["shortlist"], options.get("top_k", SEARCH_DEFAULTS["top_k"]))
    if len(queries) * per_query > MAX_CANDIDATES:
        raise WorkLimitError(
            f"{len(queries)} queries x {per_query} candidates is more than {MAX_CANDIDATES} in one request; "
            "send fewer queries or a smaller shortlist"
        )
    return queries, options


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Service:
    def __init__(
        self,
        index_dir: Path,
        reader: IndexReader,
        engine,
        *,
        settings: dict[str, Any],
        state_cache_bytes: int,
        batch_size: int,
    ):
        self.index_dir = index_dir
        self.engine = engine
        self.settings = settings  # device/precision as asked, for clients to compare with their own
        self.batch_size = batch_size
        self.states = StateLRU(state_cache_bytes)
        self.results = SmallLRU(128)
        self.thumbs = SmallLRU(512)
        self.full_images = SmallLRU(8)  # a few hundred kB each
        self._folder: tuple[tuple, str] | None = None  # (index state, common folder of its paths)
        self.served = SmallLRU(16_384)  # thumb key -> path, for rows this server has returned as hits
        self.served_frames = SmallLRU(16_384)  # thumb key of (path, t) -> (path, t), for video frames among them
        self.auto_device = resolve_device("auto").type  # what `auto` means here, for clients that ask for it
        self._reload_lock = threading.Lock()
        self.model_lock = threading.Lock()  # searches, a watcher's image batches and idle-time work take turns
        self.watch_status = None  # a WatchStatus while `serve --watch` keeps the index current
        # Where a search's shortlisted but unreranked candidates go, `lookahead` past each shortlist: (index state,
        # paths) to serve/idle.IdleStates.offer when `serve --idle-states` is on, else nowhere.
        self.on_unreranked: Callable[[tuple, list[str]], None] | None = None
        self.lookahead = 0
        self._stamp = _dir_stamp(index_dir)
        self.reader = reader

    @classmethod
    def load(
        cls, index_dir: Path, model: str | None, *, device: str, precision: str, state_cache_mb: int, batch_size: int
    ) -> Service:
        index_dir = Path(canonical_index(index_dir))
        searcher = open_searcher(index_dir, model, device=device, precision=precision)
        reader, engine = searcher.reader, searcher.engine
        settings = {"device_option": device, "precision_option": precision}
        return cls(
            index_dir, reader, engine, settings=settings, state_cache_bytes=state_cache_mb << 20, batch_size=batch_size
        )

    # ---------------------------------------------------------------- facts
    def health(self) -> dict[str, Any]:
        reader = self.reader
        return {
            "status": "ok",
            "version": __version__,
            "pid": os.getpid(),
            "index": str(self.index_dir),
            "index_model": reader.identity.model,
            "model": self.engine.model_id,
            "images": len(reader),
            "generation": reader.generation,
            "device": self.engine.device.type,
            "auto_device": self.auto_device,
            "dtype": str(self.engine.dtype).removeprefix("torch."),
            "rerank_dtype": str(self.engine.rerank_dtype).removeprefix("torch."),
            **self.settings,
            "state_cache": {
                "entries": len(self.states),
                "bytes": self.states.used_bytes,
                "budget": self.states.budget_bytes,
            },
            **({"watch": self.watch_status.as_json()} if self.watch_status is not None else {}),
        }

    def page_facts(self) -> dict[str, Any]:
        """What the search page says of the index: its name, its image count and the folder holding every image
        (cards name paths relative to it; "" when the images share none but the root)."""
        reader = self.reader
        if self._folder is None or self._folder[0] != reader.state_id:
            bounds = reader.path_bounds()  # O(N) once per index state, not per page
            self._folder = (reader.state_id, common_folder(bounds or ()))
        facts = {"name": self.index_dir.name, "images": len(reader), "folder": self._folder[1]}
        if self.watch_status is not None and self.watch_status.state.indexing:
            facts["indexing"] = self.watch_status.state.indexing
        return facts

    # ---------------------------------------------------------------- searches
    def check(self, kind: str, queries: Any, options: Any) -> tuple[list[str], dict[str, Any]]:
        """check_request with this server's default shortlist (as `query` in-process on this device)."""
        return check_request(kind, queries, options, shortlist=default_shortlist(self.engine.device.type))

    def cached(self, kind: str, queries: tuple[str, ...], options: dict[str, Any]) -> Answer | None:
        """A stored answer for this very (checked) request, if the index is unchanged and its hits' files are
        still there."""
        if _dir_stamp(self.index_dir) != self._stamp:
            return None
        answer = self.results.get(self._key(self.reader.state_id, kind, queries, options))
        if answer is None or not all(os.path.isfile(hit.path) for hits in answer.results for hit in hits):
            return None
        return answer

    def search(
        self,
        queries: list[str],
        options: dict[str, Any],
        cancelled: Callable[[], bool] | None = None,
        on_update: Callable[[list[list[Hit]]], None] | None = None,
    ) -> Answer:
        """The query, answered as `query` answers it in-process (search/query.run_query), on the current index;
        call from the one model thread. `cancelled` as Searcher's; `on_update` as run_query's (the hits it sees
        have thumbnails here too)."""
        queries, options = self.check("search", queries, options)
        request = QueryRequest(queries=tuple(queries), **options)
        return self._answer("search", tuple(queries), options, request, cancelled, on_update)

    def similar(self, path: str, options: dict[str, Any]) -> Answer:
        """Images like the indexed image at `path`; any other path is refused without being opened."""
        (path,), options = self.check("similar", [path], options)
        return self._answer("similar", (path,), options, QueryRequest(image=path, **options))

    def _answer(
        self,
        kind: str,
        queries: tuple[str, ...],
        options: dict[str, Any],
        request: QueryRequest,
        cancelled: Callable[[], bool] | None = None,
        on_update: Callable[[list[list[Hit]]], None] | None = None,
    ) -> Answer:
        """run_query over the newest index, remembered under the checked (queries, options) the caches key on.
        Only indexed images are opened: a query image or example image that is not a row of the index is
        refused (LookupError), and the client searches in-process."""
        self.refresh()
        reader = self.reader  # this search's index, even if a reload swaps self.reader meanwhile
        images = request.image_paths()
        if images and not all(self.served.get(thumb_key(path)) == path for path in images):
            if set(reader.indexed_paths(sorted(images))) != images:
                raise LookupError("not an indexed image")
        answer = Answer([])
        searcher = self._searcher(reader, answer.missing, cancelled, answer.notes.append)
        if on_update is not None:
            on_update = self._serving(on_update)
        with self.model_lock:
            answer.results = run_query(searcher, request, on_update)
        return self._remember(reader.state_id, kind, queries, options, answer)

    def _serving(self, on_update: Callable[[list[list[Hit]]], None]) -> Callable[[list[list[Hit]]], None]:
        """`on_update` with each hit's thumbnail served from then on, as an answer's are."""

        def update(results: list[list[Hit]]) -> None:
            for hits in results:
                for hit in hits:
                    self.served.put(thumb_key(hit.path), hit.path)
            on_update(results)

        return update

    def path_for_key(self, key: str) -> str | None:
        return self.served.get(key)

    def thumbnail(self, key: str) -> bytes | None:
        """JPEG bytes of a row this server returned as a hit; None for any other key or an unreadable file."""
        return self._image(key, self.thumbs, THUMB_PX, 40_000)

    def full_image(self, key: str) -> bytes | None:
        """The search page's full-size view, as `thumbnail` (the same rows only) at up to FULL_PX a side."""
        return self._image(key, self.full_images, FULL_PX, 2_000_000)

    def _image(self, key: str, cache: SmallLRU, side: int, max_bytes: int) -> bytes | None:
        path, t = self.served_frames.get(key) or (self.served.get(key), None)
        if path is None:
            return None
        cached = cache.get((self.reader.state_id, key))
        if cached is None:
            try:
                cached = make_thumbnail(path, thumb_px=side, max_bytes=max_bytes, t=t)
            except Exception:  # noqa: BLE001 - any unreadable file is just "no image"
                return None
            cache.put((self.reader.state_id, key), cached)
        return cached

    # ---------------------------------------------------------------- index changes
    def refresh(self) -> None:
        """Serve the index's newest state if its directory changed; caches of the old one are dropped.
        IndexMissingError when the index is gone."""
        with self._reload_lock:
            stamp = _dir_stamp(self.index_dir)
            if stamp == self._stamp:
                return
            reader = open_index(self.index_dir)
            check_same_space(reader, self.engine)
            self._stamp = stamp
            if reader.state_id != self.reader.state_id:
                self.reader = reader
                caches = (self.states, self.results, self.thumbs, self.full_images, self.served, self.served_frames)
                for cache in caches:
                    cache.clear()

    def _searcher(
        self,
        reader: IndexReader,
        missing: list[tuple[str, str]],
        cancelled: Callable[[], bool] | None,
        on_note: Callable[[str], None],
    ) -> Searcher:
        return Searcher(
            reader,
            self.engine,
            batch_size=self.batch_size,
            on_missing=lambda path, reason: missing.append((path, reason)),
            on_note=on_note,
            state_store=_StateStore(self.states, reader.state_id),
            cancelled=cancelled,
            on_unreranked=None if self.on_unreranked is None else partial(self.on_unreranked, reader.state_id),
            lookahead=self.lookahead,
        )

    @staticmethod
    def _key(state_id: tuple, kind: str, queries: tuple[str, ...], options: dict[str, Any]) -> tuple:
        return (state_id, kind, queries, json.dumps(options, sort_keys=True))

    def _remember(
        self, state_id: tuple, kind: str, queries: tuple[str, ...], options: dict[str, Any], answer: Answer
    ) -> Answer:
        for hits in answer.results:
            for hit in hits:
                self.served.put(thumb_key(hit.path), hit.path)
                if hit.t is not None:
                    self.served_frames.put(thumb_key(hit.path, hit.t), (hit.path, hit.t))
        self.results.put(self._key(state_id, kind, queries, options), answer)
        return answer


class _StateStore:
    """The state LRU seen by one search: keys carry the index state it searches, so a search still running
    on the old index while another request reloads cannot leave old states under a re-indexed path."""

    def __init__(self, states: StateLRU, state_id: tuple):
        self.states, self.state_id = states, state_id

    def get(self, path: str):
        return self.states.get((self.state_id, path))

    def put(self, path: str, state) -> None:
        self.states.put((self.state_id, path), state)


def _dir_stamp(directory: Path) -> tuple[int, int] | None:
    """Changes whenever a file is created, renamed or removed in the index directory (every commit does);
    None once the directory is gone (refresh then reports the index missing)."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return None
    return info.st_mtime_ns, info.st_ino
