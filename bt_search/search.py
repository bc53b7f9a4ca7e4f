"""Shortlist by cosine (FAISS), rerank with the ITM head (fusion only), rank. Ranking helpers are pure.

For a batch of queries, each distinct candidate image is decoded and run through the vision tower once; its
states stay cached only while a query still to come needs them. A long-lived caller (the server) can pass a
`state_store` that keeps them across calls, and a `progress` callback that sees the rerank advance.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from .errors import ImageDecodeError, UsageError
from .hits import Hit
from .images import load_pixels
from .model import BridgeTowerEngine

MissingCallback = Callable[[str, str], None]
ProgressCallback = Callable[[int, int], None]  # (steps done, steps in all): one step per vision state or ITM pair


class StateStore(Protocol):
    """Vision-tower states kept across searches, by image path (the server's memory-bounded LRU)."""

    def get(self, path: str) -> torch.Tensor | None: ...

    def put(self, path: str, state: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class Shortlist:
    """One query's cosine candidates, best first: row ids into the index and their similarities."""

    query: str
    rows: np.ndarray
    similarities: np.ndarray
    paths: list[str]  # paths[i] is row rows[i]'s file

    def subset(self, keep: Sequence[int]) -> Shortlist:
        """The candidates at positions `keep`, in that order."""
        keep = list(keep)
        return Shortlist(self.query, self.rows[keep], self.similarities[keep], [self.paths[i] for i in keep])


def rank_hits(
    shortlist: Shortlist,
    scores: np.ndarray | None,
    top_k: int,
    threshold: float | None = None,
) -> list[Hit]:
    """Order a shortlist by score (ITM, or cosine when `scores` is None); ties by cosine, then path."""
    scores = shortlist.similarities if scores is None else scores
    order = sorted(
        range(len(shortlist.rows)),
        key=lambda i: (-float(scores[i]), -float(shortlist.similarities[i]), shortlist.paths[i]),
    )
    hits = []
    for i in order:
        if threshold is not None and scores[i] < threshold:
            continue
        hits.append(
            Hit(
                query=shortlist.query,
                rank=len(hits) + 1,
                path=shortlist.paths[i],
                score=float(scores[i]),
                similarity=float(shortlist.similarities[i]),
                shortlist_rank=i + 1,
            )
        )
        if len(hits) == top_k:
            break
    return hits


def cosine_shortlists(
    reader, queries: Sequence[str], query_embeddings: np.ndarray, size: int, under: str | None = None
) -> list[Shortlist]:
    """The `size` nearest images by cosine for each query; exact over the subset when `under` is given."""
    if under is None:
        similarities, rows = reader.search(query_embeddings, size)
        return [Shortlist(q, r, s, reader.paths_for(r)) for q, r, s in zip(queries, rows, similarities)]
    subset = reader.ids_under(under)
    if subset.size == 0:
        raise UsageError(f"no indexed images under {under}")
    sims = query_embeddings @ reader.embeddings_for(subset).T
    shortlists = []
    for query, row_sims in zip(queries, sims):
        order = np.argsort(-row_sims, kind="stable")[:size]
        shortlists.append(Shortlist(query, subset[order], row_sims[order], reader.paths_for(subset[order])))
    return shortlists


class Searcher:
    """Text (or image) queries against one index with one engine."""

    def __init__(
        self,
        reader,
        engine: BridgeTowerEngine,
        *,
        batch_size: int = 16,
        on_missing: MissingCallback | None = None,
        state_store: StateStore | None = None,
        progress: ProgressCallback | None = None,
    ):
        self.reader = reader
        self.engine = engine
        self.batch_size = batch_size
        self.on_missing = on_missing or (lambda path, reason: None)
        self.state_store = state_store
        self.progress = progress

    def search(
        self,
        queries: Sequence[str],
        *,
        top_k: int = 10,
        shortlist: int = 50,
        rerank: bool = True,
        threshold: float | None = None,
        under: str | None = None,
    ) -> list[list[Hit]]:
        """Hits per query, queries in input order, each ranked best first."""
        if not queries or any(not q.strip() for q in queries):
            raise UsageError("empty query: give some text to search for")
        embeddings = self.engine.encode_texts(list(queries))
        shortlists = cosine_shortlists(self.reader, queries, embeddings, max(shortlist, top_k), under)
        shortlists = [self._drop_missing(s) for s in shortlists]
        if not rerank:
            return [rank_hits(s, None, top_k, threshold) for s in shortlists]
        return self._reranked(shortlists, top_k, threshold)

    def similar_images(self, image_path: str, *, top_k: int = 10, under: str | None = None) -> list[Hit]:
        """Images nearest to `image_path` by ITC image embedding (no rerank: ITM scores text against images)."""
        try:
            pixels, _ = load_pixels(image_path, self.engine.preprocessing, draft=False)
        except ImageDecodeError as err:
            raise UsageError(f"--image {err}") from None
        embedding = self.engine.encode_images(pixels[None])
        (found,) = cosine_shortlists(self.reader, [image_path], embedding, top_k, under)
        return rank_hits(self._drop_missing(found), None, top_k)

    def _drop_missing(self, shortlist: Shortlist) -> Shortlist:
        return shortlist.subset([i for i, path in enumerate(shortlist.paths) if self._exists(path)])

    def _exists(self, path: str) -> bool:
        if os.path.isfile(path):
            return True
        self.on_missing(path, "no longer exists (moved or deleted since indexing)")
        return False

    def _reranked(self, shortlists: list[Shortlist], top_k: int, threshold: float | None) -> list[list[Hit]]:
        uses = Counter(int(r) for s in shortlists for r in s.rows)
        tick = _Ticker(self.progress, total=len(uses) + sum(uses.values()))
        cache = VisionStateCache(self, uses, tick)
        results = []
        for shortlist in shortlists:
            kept, states = cache.take(shortlist)
            scores = self.engine.itm_scores(self.engine.text_states(shortlist.query), states) if states is not None else np.zeros(0)
            tick(len(shortlist.rows))
            results.append(rank_hits(kept, scores, top_k, threshold))
        return results


class _Ticker:
    """Counts rerank steps and reports (done, total) to an optional progress callback."""

    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback, self.total, self.done = callback, total, 0
        if callback:
            callback(0, total)

    def __call__(self, steps: int) -> None:
        self.done += steps
        if self.callback and steps:
            self.callback(self.done, self.total)


class VisionStateCache:
    """Vision-tower states per candidate row, computed once, dropped when no later query needs them."""

    def __init__(self, searcher: Searcher, uses: Counter, tick: Callable[[int], None] = lambda steps: None):
        self.searcher = searcher
        self.uses = uses
        self.tick = tick
        self.states: dict[int, torch.Tensor] = {}
        self.failed: set[int] = set()

    def take(self, shortlist: Shortlist) -> tuple[Shortlist, torch.Tensor | None]:
        """The candidates whose file decodes, with their states in order; failing files are reported and left out."""
        rows = [int(r) for r in shortlist.rows]
        todo = {r: p for r, p in zip(rows, shortlist.paths) if r not in self.states and r not in self.failed}
        self._compute(todo)
        usable = [i for i, r in enumerate(rows) if r in self.states]
        stacked = torch.stack([self.states[rows[i]] for i in usable]) if usable else None
        for row in rows:
            self.uses[row] -= 1
            if self.uses[row] == 0:
                self.states.pop(row, None)
        return shortlist.subset(usable), stacked

    def _compute(self, paths_by_row: dict[int, str]) -> None:
        engine, store = self.searcher.engine, self.searcher.state_store
        decoded = []
        for row, path in paths_by_row.items():
            stored = store.get(path) if store is not None else None
            if stored is not None:
                self.states[row] = stored
                continue
            try:
                decoded.append((row, path, load_pixels(path, engine.preprocessing, draft=False)[0]))
            except ImageDecodeError as err:
                self.failed.add(row)
                self.searcher.on_missing(path, err.reason)
        self.tick(len(paths_by_row) - len(decoded))
        size = self.searcher.batch_size
        for start in range(0, len(decoded), size):
            chunk = decoded[start : start + size]
            states = engine.vision_states(np.stack([pixels for _, _, pixels in chunk]))
            for (row, path, _), state in zip(chunk, states):
                self.states[row] = state
                if store is not None:
                    store.put(path, state)
            self.tick(len(chunk))
