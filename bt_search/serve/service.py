"""The warm state behind the server: one engine, the current index, and bounded caches.

Model work (text tower, vision tower, fusion) is not thread-safe to interleave usefully on a few cores, so
the app calls `search`/`similar` from one worker thread at a time. `cached` and `thumbnail` are safe from
any thread. The index is re-read when its directory changes and its generation moved on (a finished
`bt-search index` run); every cache is keyed on or cleared with that generation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bt_search import __version__
from bt_search.errors import UsageError
from bt_search.output.html_sheet import make_thumbnail
from bt_search.search.hits import Hit
from bt_search.search.open import check_same_space, open_index, open_searcher
from bt_search.search.searcher import Searcher
from bt_search.serve.caches import SmallLRU, StateLRU
from bt_search.serve.discovery import canonical_index
from bt_search.store import IndexReader

MAX_QUERIES = 256
MAX_QUERY_CHARS = 1_000
MAX_RESULTS = 1_000  # bound on top_k and shortlist
THUMB_PX = 200
# The keyword options of Searcher.search a request may set (whatever the library grows, by name).
SEARCH_OPTIONS = frozenset(
    name for name, p in inspect.signature(Searcher.search).parameters.items() if p.kind is p.KEYWORD_ONLY
)


@dataclass
class Answer:
    """Hits per query, plus the files the search had to leave out (path, reason), in the order met."""

    results: list[list[Hit]]
    missing: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "results": [[dataclasses.asdict(hit) for hit in hits] for hits in self.results],
            "missing": [list(item) for item in self.missing],
        }


def thumb_key(path: str) -> str:
    """An opaque, URL-safe name for an image path (any bytes; never parsed back into a path)."""
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:32]


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Refuse option names Searcher.search does not take and out-of-range sizes (UsageError)."""
    unknown = sorted(set(options) - SEARCH_OPTIONS)
    if unknown:
        raise UsageError(f"unsupported search option(s): {', '.join(unknown)}")
    for name in ("top_k", "shortlist"):
        value = options.get(name)
        if value is not None and (type(value) is not int or not 1 <= value <= MAX_RESULTS):
            raise UsageError(f"{name} must be an integer from 1 to {MAX_RESULTS}")
    expected = {"rerank": (bool,), "threshold": (int, float, type(None)), "under": (str, type(None))}
    for name, types in expected.items():
        if name in options and type(options[name]) not in types:
            raise UsageError(f"{name} has the wrong type")
    return options


def check_queries(queries: list[str]) -> list[str]:
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise UsageError("queries must be a list of strings")
    if not 1 <= len(queries) <= MAX_QUERIES:
        raise UsageError(f"give 1 to {MAX_QUERIES} queries per request")
    if any(len(q) > MAX_QUERY_CHARS for q in queries):
        raise UsageError(f"a query is longer than {MAX_QUERY_CHARS} characters")
    return queries


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
        self.served = SmallLRU(16_384)  # thumb key -> path, for rows this server has returned as hits
        self._reload_lock = threading.Lock()
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
            "dtype": str(self.engine.dtype).removeprefix("torch."),
            "rerank_dtype": str(self.engine.rerank_dtype).removeprefix("torch."),
            **self.settings,
            "state_cache": {
                "entries": len(self.states),
                "bytes": self.states.used_bytes,
                "budget": self.states.budget_bytes,
            },
        }

    # ---------------------------------------------------------------- searches
    def cached(self, kind: str, queries: tuple[str, ...], options: dict[str, Any]) -> Answer | None:
        """A stored answer for this very request, if the index is unchanged and its hits' files are still there."""
        if _dir_stamp(self.index_dir) != self._stamp:
            return None
        answer = self.results.get(self._key(self.reader.generation, kind, queries, options))
        if answer is None or not all(os.path.isfile(hit.path) for hits in answer.results for hit in hits):
            return None
        return answer

    def search(self, queries: list[str], options: dict[str, Any]) -> Answer:
        """Searcher.search on the current index (call from the one model thread)."""
        check_queries(queries)
        check_options(options)
        self.refresh()
        reader, missing = self.reader, []  # this search's index, even if a reload swaps self.reader meanwhile
        answer = Answer(self._searcher(reader, missing).search(queries, **options), missing)
        return self._remember(reader.generation, "search", tuple(queries), options, answer)

    def similar(self, path: str, options: dict[str, Any]) -> Answer:
        """Images like the indexed image at `path`; any other path is refused without being opened."""
        check_options(options)
        if set(options) - {"top_k", "under"}:
            raise UsageError("similar images take top_k and under only")
        self.refresh()
        reader, missing = self.reader, []
        if self.served.get(thumb_key(path)) != path and not reader.indexed_paths([path]):
            raise LookupError("not an indexed image")
        answer = Answer([self._searcher(reader, missing).similar_images(path, **options)], missing)
        return self._remember(reader.generation, "similar", (path,), options, answer)

    def path_for_key(self, key: str) -> str | None:
        return self.served.get(key)

    def thumbnail(self, key: str) -> bytes | None:
        """JPEG bytes of a row this server returned as a hit; None for any other key or an unreadable file."""
        path = self.served.get(key)
        if path is None:
            return None
        cached = self.thumbs.get((self.reader.generation, key))
        if cached is None:
            try:
                cached = make_thumbnail(path, thumb_px=THUMB_PX, max_bytes=40_000)
            except Exception:  # noqa: BLE001 - any unreadable file is just "no thumbnail"
                return None
            self.thumbs.put((self.reader.generation, key), cached)
        return cached

    # ---------------------------------------------------------------- index changes
    def refresh(self) -> None:
        """Serve the index's newest generation if a run has changed it; caches of the old one are dropped."""
        with self._reload_lock:
            stamp = _dir_stamp(self.index_dir)
            if stamp == self._stamp:
                return
            reader = open_index(self.index_dir)
            check_same_space(reader, self.engine)
            self._stamp = stamp
            if reader.generation != self.reader.generation or len(reader) != len(self.reader):
                self.reader = reader
                for cache in (self.states, self.results, self.thumbs, self.served):
                    cache.clear()

    def _searcher(self, reader: IndexReader, missing: list[tuple[str, str]]) -> Searcher:
        return Searcher(
            reader,
            self.engine,
            batch_size=self.batch_size,
            on_missing=lambda path, reason: missing.append((path, reason)),
            state_store=_GenerationStore(self.states, reader.generation),
        )

    @staticmethod
    def _key(generation: int, kind: str, queries: tuple[str, ...], options: dict[str, Any]) -> tuple:
        return (generation, kind, queries, json.dumps(options, sort_keys=True))

    def _remember(
        self, generation: int, kind: str, queries: tuple[str, ...], options: dict[str, Any], answer: Answer
    ) -> Answer:
        for hits in answer.results:
            for hit in hits:
                self.served.put(thumb_key(hit.path), hit.path)
        self.results.put(self._key(generation, kind, queries, options), answer)
        return answer


class _GenerationStore:
    """The state LRU seen by one search: keys carry the generation it searches, so a search still running
    on the old index while another request reloads cannot leave old states under a re-indexed path."""

    def __init__(self, states: StateLRU, generation: int):
        self.states, self.generation = states, generation

    def get(self, path: str):
        return self.states.get((self.generation, path))

    def put(self, path: str, state) -> None:
        self.states.put((self.generation, path), state)


def _dir_stamp(directory: Path) -> tuple[int, int]:
    """Changes whenever a file is created, renamed or removed in the index directory (every commit does)."""
    info = os.stat(directory)
    return info.st_mtime_ns, info.st_ino
