"""Shortlist by cosine (FAISS), rerank with the ITM head (fusion only), rank. Ranking helpers are pure.

For a batch of queries, each distinct candidate image is decoded and run through the vision tower once; its
states stay cached only while a query still to come needs them. A long-lived caller (the server) can pass a
`state_store` that keeps them across calls, a `progress` callback that sees the rerank advance, and a
`cancelled` hook that stops a long rerank between chunks.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from bt_search.config import DEFAULT_SCORE, DEFAULT_TOP_K
from bt_search.engine.model import BridgeTowerEngine
from bt_search.errors import ImageDecodeError, SearchCancelledError, UsageError
from bt_search.media.decoding import load_file_pixels
from bt_search.media.file_reading import existing_files
from bt_search.media.images import load_pixels
from bt_search.search.hits import Hit
from bt_search.search.match import check_min_match
from bt_search.search.missing import MISSING_REASON
from bt_search.search.rerank_budget import RerankClock, default_shortlist
from bt_search.search.term_vectors import (
    query_vector,
    rerank_with_negatives,
    signed_image_terms,
    signed_text_terms,
)
from bt_search.search.terms import Terms, Weighted

MissingCallback = Callable[[str, str], None]
RERANK_DRAFT_DECODE = True
# How far past its own size a shortlist looks for files that still exist: deleted files are replaced from
# up to this many times deeper, and no further (a missing folder must not make a query read the whole index).
MISSING_DEPTH_FACTOR = 64
SCORES = ("itm", "cosine", "blend")  # what ranks a reranked shortlist; see blend_scores
ProgressCallback = Callable[[int, int], None]  # (candidates done, candidates in all) of the call's rerank
CancelledHook = Callable[[], bool]  # True: stop the search (SearchCancelledError) before its next rerank chunk


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
    itm: np.ndarray | None = None,
    min_match: float | None = None,
) -> list[Hit]:
    """Order a shortlist by score (ITM, or cosine when `scores` is None); ties by cosine, then path. `itm`: the
    candidates' ITM probabilities, carried into the hits (None: not reranked); `min_match` drops those below it."""
    scores = shortlist.similarities if scores is None else scores
    order = sorted(
        range(len(shortlist.rows)),
        key=lambda i: (-float(scores[i]), -float(shortlist.similarities[i]), shortlist.paths[i]),
    )
    hits = []
    for i in order:
        if threshold is not None and scores[i] < threshold:
            continue
        if min_match is not None and (itm is None or itm[i] < min_match):
            continue
        hits.append(
            Hit(
                query=shortlist.query,
                rank=len(hits) + 1,
                path=shortlist.paths[i],
                score=float(scores[i]),
                similarity=float(shortlist.similarities[i]),
                shortlist_rank=i + 1,
                itm=None if itm is None else float(itm[i]),
            )
        )
        if len(hits) == top_k:
            break
    return hits


def cosine_shortlists(
    reader, queries: Sequence[str], query_embeddings: np.ndarray, size: int, under: str | None = None, where=None
) -> list[Shortlist]:
    """The `size` nearest images by cosine for each query; exact over the subset when `under` or `where`
    (a pyarrow.compute expression over the rows' columns, e.g. capture.date_filter) is given."""
    if under is None and where is None:
        similarities, rows = reader.search(query_embeddings, size)
        return [Shortlist(q, r, s, reader.paths_for(r)) for q, r, s in zip(queries, rows, similarities)]
    subset = reader.ids_under(under) if under is not None else None
    if where is not None:
        matching = reader.ids_where(where)
        subset = matching if subset is None else np.intersect1d(subset, matching)
    if subset.size == 0:
        raise UsageError(f"no indexed images under {under}" if where is None else "no indexed images match the filters")
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
        on_note: Callable[[str], None] | None = None,
        state_store: StateStore | None = None,
        progress: ProgressCallback | None = None,
        cancelled: CancelledHook | None = None,
    ):
        self.reader = reader
        self.engine = engine
        self.batch_size = batch_size
        self.on_missing = on_missing or (lambda path, reason: None)
        self.on_note = on_note or (lambda message: None)  # talk for stderr: rerank estimates, budget cuts
        self.state_store = state_store
        self.progress = progress
        self.cancelled = cancelled or (lambda: False)

    def search(
        self,
        queries: Sequence[str | Terms],
        *,
        top_k: int = DEFAULT_TOP_K,
        shortlist: int | None = None,
        rerank: bool = True,
        threshold: float | None = None,
        under: str | None = None,
        score: str = DEFAULT_SCORE,
        rerank_budget: float | None = None,
        where=None,
        min_match: float | None = None,
    ) -> list[list[Hit]]:
        """Hits per query, queries in input order, each ranked best first. A query is a text, or Terms (a text
        with negatives and example images: see terms.py). `shortlist`: cosine candidates to rerank (None: the
        default for the engine's device, rerank_budget.default_shortlist). `score` ranks reranked candidates
        (see blend_scores); "cosine", like rerank=False, skips the rerank. `rerank_budget` (seconds) reranks
        only the best candidates that fit and leaves the rest out (rerank_budget.py). `where` (a pyarrow
        expression on the index's columns) filters before the shortlist. `min_match` keeps only hits whose ITM
        probability is at least it (search/match.py); with `score="cosine"` the shortlist is then scored by ITM too,
        and still ranked by cosine."""
        terms = [q if isinstance(q, Terms) else Terms(Weighted(q)) for q in queries]
        if not terms or any(not t.text.value.strip() for t in terms):
            raise UsageError("empty query: give some text to search for")
        if score not in SCORES:
            raise UsageError(f"`score` must be one of {', '.join(SCORES)}, not {score!r}")
        check_threshold(threshold)
        check_min_match(min_match, rerank=rerank)
        labels = [t.label for t in terms]
        shortlist = shortlist or default_shortlist(self.engine.device.type)
        reranked = rerank and (score != "cosine" or min_match is not None)
        vectors = self._query_vectors([t.shortlist_terms(reranked) for t in terms])
        shortlists = self._live_shortlists(labels, vectors, max(shortlist, top_k), under, where)
        if not reranked:
            return [rank_hits(s, None, top_k, threshold) for s in shortlists]
        clock = RerankClock(sum(len(s.rows) for s in shortlists), len(shortlists), rerank_budget, self.on_note)
        results = self._reranked(shortlists, terms, top_k, threshold, score, clock, min_match)
        if clock.summary():
            self.on_note(clock.summary())
        return results

    def _query_vectors(self, terms: list[Terms]) -> np.ndarray:
        """Unit query vectors [Q, D]; each distinct text and image is encoded once for the whole batch."""
        if all(t.is_plain for t in terms):
            return self.engine.encode_texts([t.text.value for t in terms])
        texts = sorted({value for t in terms for value in signed_text_terms(t)[0]})
        text_rows = dict(zip(texts, self.engine.encode_texts(texts)))
        paths = sorted({value for t in terms for value in signed_image_terms(t)[0]})
        image_rows = dict(zip(paths, self._encode_term_images(paths))) if paths else {}
        vectors = []
        for t in terms:
            (text_values, text_weights), (image_values, image_weights) = signed_text_terms(t), signed_image_terms(t)
            images = np.stack([image_rows[p] for p in image_values]) if image_values else None
            vectors.append(
                query_vector(np.stack([text_rows[v] for v in text_values]), text_weights, images, image_weights)
            )
        return np.stack(vectors)

    def _encode_term_images(self, paths: list[str]) -> np.ndarray:
        pixels = []
        for path in paths:
            try:
                pixels.append(load_pixels(path, self.engine.preprocessing, draft=False)[0])
            except ImageDecodeError as err:
                raise UsageError(f"`likes`/`unlikes` {err}") from None
        return self.engine.encode_images(np.stack(pixels))

    def similar_images(
        self, image_path: str, *, top_k: int = 10, threshold: float | None = None, under: str | None = None, where=None
    ) -> list[Hit]:
        """Images nearest to `image_path` by ITC image embedding (no rerank: ITM scores text against images)."""
        check_threshold(threshold)
        try:
            pixels, _ = load_pixels(image_path, self.engine.preprocessing, draft=False)
        except ImageDecodeError as err:
            raise UsageError(f"`image` {err}") from None
        embedding = self.engine.encode_images(pixels[None])
        (found,) = self._live_shortlists([image_path], embedding, top_k, under, where)
        return rank_hits(found, None, top_k, threshold)

    def _live_shortlists(
        self, queries: Sequence[str], embeddings: np.ndarray, size: int, under: str | None, where=None
    ) -> list[Shortlist]:
        """Each query's `size` nearest candidates whose files still exist. A file deleted since indexing is
        replaced by the next candidate (the search is repeated twice as deep) until `size` are live, the index
        runs out, or MISSING_DEPTH_FACTOR x `size` candidates were read: a folder gone whole (an unplugged
        drive) then costs what that reads, not the size of the folder, and the results stop short."""
        exists: dict[str, bool] = {}  # each file is checked, and each vanished one reported, once
        results: list[Shortlist | None] = [None] * len(queries)
        pending, depth = list(range(len(queries))), size
        while pending:
            found = cosine_shortlists(
                self.reader, [queries[i] for i in pending], embeddings[pending], depth, under, where
            )
            self._check_exist([path for shortlist in found for path in shortlist.paths], exists)
            still_short = []
            for i, shortlist in zip(pending, found):
                live = [j for j, path in enumerate(shortlist.paths) if exists[path]]
                deepest = len(shortlist.rows) < depth or depth >= size * MISSING_DEPTH_FACTOR
                if len(live) >= size or deepest:  # enough, the index ran out, or as deep as a query goes
                    results[i] = shortlist.subset(live[:size])
                else:
                    still_short.append(i)
            pending, depth = still_short, depth * 2
        return results

    def _check_exist(self, paths: list[str], exists: dict[str, bool]) -> None:
        """Record in `exists` whether the files of `paths` not checked yet exist, in one batched check (local
        paths or URLs, through the reader the indexer used); report the vanished ones."""
        unchecked = [path for path in dict.fromkeys(paths) if path not in exists]
        present = existing_files(unchecked)
        for path in unchecked:
            exists[path] = path in present
            if not exists[path]:
                self.on_missing(path, MISSING_REASON)

    def _reranked(
        self,
        shortlists: list[Shortlist],
        terms: list[Terms],
        top_k: int,
        threshold: float | None,
        score: str,
        clock: RerankClock,
        min_match: float | None = None,
    ) -> list[list[Hit]]:
        uses = Counter(int(r) for s in shortlists for r in s.rows)
        tick = _Ticker(self.progress, total=clock.candidates)  # candidates, as the user counts them (`shortlist`)
        cache = VisionStateCache(self, uses)
        text_states = {}  # each distinct text (query or negative) runs the text tower once per call
        results = []
        for number, (shortlist, query) in enumerate(zip(shortlists, terms)):
            kept_parts, score_parts, position = [], [], 0
            while position < len(shortlist.rows):
                if self.cancelled():
                    raise SearchCancelledError("the search was cancelled")
                size = clock.chunk_size(number, position, len(shortlist.rows) - position, self.batch_size)
                if size == 0:
                    clock.skip(len(shortlist.rows) - position)
                    tick(len(shortlist.rows) - position)  # left out: the bar still ends full
                    break
                kept, states = cache.take(shortlist.subset(range(position, position + size)))
                if states is not None:
                    itm = [self._itm(text_states, t.value, states) for t in (query.text, *query.nots)]
                    weights = np.array([t.weight for t in query.nots])
                    kept_parts.append(kept)
                    score_parts.append(rerank_with_negatives(itm[0], np.array(itm[1:]), weights))
                tick(size)
                position += size
                clock.record(size)
            kept = _concatenated(shortlist.query, kept_parts)
            itm = np.concatenate(score_parts) if score_parts else np.zeros(0, dtype=np.float32)
            # score "cosine" reaches here only for `min_match`: ranked by cosine (None), with the ITM it filters on
            scores = blend_scores(itm, kept.similarities) if score == "blend" else itm if score == "itm" else None
            results.append(rank_hits(kept, scores, top_k, threshold, itm=itm, min_match=min_match))
        return results

    def _itm(self, text_states: dict, text: str, states: torch.Tensor) -> np.ndarray:
        if text not in text_states:
            text_states[text] = self.engine.text_states(text)
        return self.engine.itm_scores(text_states[text], states)


def blend_scores(itm: np.ndarray, cosine: np.ndarray) -> np.ndarray:
    """ITM probability + ITC cosine: the sum BLIP and BLIP-2 rank their retrieval candidates by (LAVIS), here
    with the probability rather than the raw logit, so both terms live on comparable scales."""
    return (np.asarray(itm, dtype=np.float32) + np.asarray(cosine, dtype=np.float32)).astype(np.float32)


def _concatenated(query: str, parts: list[Shortlist]) -> Shortlist:
    if not parts:
        return Shortlist(query, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), [])
    return Shortlist(
        query,
        np.concatenate([p.rows for p in parts]),
        np.concatenate([p.similarities for p in parts]),
        [path for p in parts for path in p.paths],
    )


def check_threshold(threshold: float | None) -> None:
    if threshold is not None and not math.isfinite(threshold):
        raise UsageError(f"`threshold` must be a finite number, not {threshold}")


class _Ticker:
    """Counts reranked candidates and reports (done, total) to an optional progress callback."""

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

    def __init__(self, searcher: Searcher, uses: Counter):
        self.searcher = searcher
        self.uses = uses
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
                # Draft JPEG decoding (DCT scaling, as at index time): ~9x faster to decode a large photo, ITM within
                # 0.01 of the full decode (docs/performance.md; tests/unit/search/test_terms.py checks the bound).
                decoded.append((row, path, load_file_pixels(path, engine.preprocessing, draft=RERANK_DRAFT_DECODE)))
            except ImageDecodeError as err:
                self.failed.add(row)
                self.searcher.on_missing(path, err.reason)
        size = self.searcher.batch_size
        for start in range(0, len(decoded), size):
            chunk = decoded[start : start + size]
            states = engine.vision_states(np.stack([pixels for _, _, pixels in chunk]))
            for (row, path, _), state in zip(chunk, states):
                self.states[row] = state
                if store is not None:
                    store.put(path, state)
