"""Shortlist by cosine (FAISS), rerank with the ITM head (fusion only), rank. Ranking helpers are pure.

For a batch of queries, each distinct candidate image is decoded and run through the vision tower once; its
states stay cached only while a query still to come needs them.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import ImageDecodeError, UsageError
from .hits import Hit
from .images import load_pixels
from .model import BridgeTowerEngine

MissingCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class Shortlist:
    """One query's cosine candidates, best first: row ids into the index and their similarities."""

    query: str
    rows: np.ndarray
    similarities: np.ndarray


def rank_hits(
    shortlist: Shortlist,
    paths: Sequence[str],
    scores: np.ndarray | None,
    top_k: int,
    threshold: float | None = None,
) -> list[Hit]:
    """Order a shortlist by score (ITM, or cosine when `scores` is None); ties by cosine, then path."""
    scores = shortlist.similarities if scores is None else scores
    order = sorted(
        range(len(shortlist.rows)),
        key=lambda i: (-float(scores[i]), -float(shortlist.similarities[i]), paths[shortlist.rows[i]]),
    )
    hits = []
    for i in order:
        if threshold is not None and scores[i] < threshold:
            continue
        hits.append(
            Hit(
                query=shortlist.query,
                rank=len(hits) + 1,
                path=paths[shortlist.rows[i]],
                score=float(scores[i]),
                similarity=float(shortlist.similarities[i]),
                shortlist_rank=i + 1,
            )
        )
        if len(hits) == top_k:
            break
    return hits


def rows_under(paths: Sequence[str], directory: str) -> np.ndarray:
    """Row ids of indexed paths inside `directory` (recursively)."""
    prefix = os.path.join(os.path.abspath(directory), "")
    return np.array([i for i, p in enumerate(paths) if p.startswith(prefix)], dtype=np.int64)


def cosine_shortlists(
    reader, queries: Sequence[str], query_embeddings: np.ndarray, size: int, under: str | None = None
) -> list[Shortlist]:
    """The `size` nearest images by cosine for each query; exact over the subset when `under` is given."""
    if under is None:
        similarities, rows = reader.search(query_embeddings, size)
        return [Shortlist(q, r, s) for q, r, s in zip(queries, rows, similarities)]
    subset = rows_under(reader.paths, under)
    if subset.size == 0:
        raise UsageError(f"no indexed images under {under}")
    sims = query_embeddings @ reader.embeddings[subset].T
    shortlists = []
    for query, row_sims in zip(queries, sims):
        best = np.argsort(-row_sims, kind="stable")[:size]
        shortlists.append(Shortlist(query, subset[best], row_sims[best]))
    return shortlists


class Searcher:
    """Text (or image) queries against one index with one engine."""

    def __init__(self, reader, engine: BridgeTowerEngine, *, batch_size: int = 16, on_missing: MissingCallback | None = None):
        self.reader = reader
        self.engine = engine
        self.batch_size = batch_size
        self.on_missing = on_missing or (lambda path, reason: None)

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
            return [rank_hits(s, self.reader.paths, None, top_k, threshold) for s in shortlists]
        return self._reranked(shortlists, top_k, threshold)

    def similar_images(self, image_path: str, *, top_k: int = 10, under: str | None = None) -> list[Hit]:
        """Images nearest to `image_path` by ITC image embedding (no rerank: ITM scores text against images)."""
        try:
            pixels, _ = load_pixels(image_path, self.engine.preprocessing, draft=False)
        except ImageDecodeError as err:
            raise UsageError(f"--image {err}") from None
        embedding = self.engine.encode_images(pixels[None])
        (found,) = cosine_shortlists(self.reader, [image_path], embedding, top_k, under)
        return rank_hits(self._drop_missing(found), self.reader.paths, None, top_k)

    def _drop_missing(self, shortlist: Shortlist) -> Shortlist:
        keep = [i for i, row in enumerate(shortlist.rows) if self._exists(self.reader.paths[row])]
        return Shortlist(shortlist.query, shortlist.rows[keep], shortlist.similarities[keep])

    def _exists(self, path: str) -> bool:
        if os.path.isfile(path):
            return True
        self.on_missing(path, "no longer exists (moved or deleted since indexing)")
        return False

    def _reranked(self, shortlists: list[Shortlist], top_k: int, threshold: float | None) -> list[list[Hit]]:
        cache = VisionStateCache(self, Counter(int(r) for s in shortlists for r in s.rows))
        results = []
        for shortlist in shortlists:
            rows, states = cache.take([int(r) for r in shortlist.rows])
            kept = Shortlist(shortlist.query, np.array(rows, dtype=np.int64), _select(shortlist, rows))
            scores = self.engine.itm_scores(self.engine.text_states(shortlist.query), states) if rows else np.zeros(0)
            results.append(rank_hits(kept, self.reader.paths, scores, top_k, threshold))
        return results


def _select(shortlist: Shortlist, rows: list[int]) -> np.ndarray:
    position = {int(r): i for i, r in enumerate(shortlist.rows)}
    return np.array([shortlist.similarities[position[r]] for r in rows], dtype=np.float32)


class VisionStateCache:
    """Vision-tower states per candidate row, computed once, dropped when no later query needs them."""

    def __init__(self, searcher: Searcher, uses: Counter):
        self.searcher = searcher
        self.uses = uses
        self.states: dict[int, torch.Tensor] = {}
        self.failed: set[int] = set()

    def take(self, rows: list[int]) -> tuple[list[int], torch.Tensor | None]:
        """States for the rows that decode, in order; rows whose file fails are reported and left out."""
        self._compute([r for r in dict.fromkeys(rows) if r not in self.states and r not in self.failed])
        usable = [r for r in rows if r in self.states]
        stacked = torch.stack([self.states[r] for r in usable]) if usable else None
        for row in rows:
            self.uses[row] -= 1
            if self.uses[row] == 0:
                self.states.pop(row, None)
        return usable, stacked

    def _compute(self, rows: list[int]) -> None:
        engine, paths = self.searcher.engine, self.searcher.reader.paths
        decoded = []
        for row in rows:
            try:
                decoded.append((row, load_pixels(paths[row], engine.preprocessing, draft=False)[0]))
            except ImageDecodeError as err:
                self.failed.add(row)
                self.searcher.on_missing(paths[row], err.reason)
        size = self.searcher.batch_size
        for start in range(0, len(decoded), size):
            chunk = decoded[start : start + size]
            states = engine.vision_states(np.stack([pixels for _, pixels in chunk]))
            for (row, _), state in zip(chunk, states):
                self.states[row] = state
