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
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch

from bt_search.config import DEFAULT_SCORE, DEFAULT_TOP_K
from bt_search.engine.model import BridgeTowerEngine
from bt_search.errors import ImageDecodeError, SearchCancelledError, UsageError
from bt_search.media.decoding import load_file_pixels
from bt_search.media.file_reading import existing_files
from bt_search.media.images import load_pixels
from bt_search.search.explain import KeptStates, explain_hits
from bt_search.search.hits import DEFAULT_FRAMES, Hit, check_frames
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
# Hits per query as known so far: first the cosine shortlist, then after each rerank chunk the reranked candidates
# (best first) followed by those still waiting (cosine order, itm None). See Searcher.search's `on_update`.
UpdateCallback = Callable[[list[list[Hit]]], None]
# Candidates a search shortlisted but did not rerank (budget cuts, and the `lookahead` candidates just past the
# shortlist), best first, as (file, video frame time or None): what a server may compute vision states for while
# it is idle (serve/idle.py).
UnrerankedCallback = Callable[[list[tuple[str, float | None]]], None]


def state_key(file: str, time: float | None) -> str:
    """The key a StateStore keeps a candidate's vision states under: its path, and a video frame's time."""
    return file if time is None else f"{file}#t={time!r}"


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
    times: list[float | None] | None = None  # times[i]: row rows[i]'s video frame time (None: all still images)

    def subset(self, keep: Sequence[int]) -> Shortlist:
        """The candidates at positions `keep`, in that order."""
        keep = list(keep)
        times = None if self.times is None else [self.times[i] for i in keep]
        return Shortlist(self.query, self.rows[keep], self.similarities[keep], [self.paths[i] for i in keep], times)

    def time(self, i: int) -> float | None:
        return None if self.times is None else self.times[i]


def rank_hits(
    shortlist: Shortlist,
    scores: np.ndarray | None,
    top_k: int,
    threshold: float | None = None,
    itm: np.ndarray | None = None,
    frames: str = DEFAULT_FRAMES,
    min_match: float | None = None,
) -> list[Hit]:
    """Order a shortlist by score (ITM, or cosine when `scores` is None); ties by cosine, then path, then frame
    time. `itm`: the candidates' ITM probabilities, carried into the hits (None: not reranked). `frames="best"`
    keeps a video's best frame only (its other frames are left out, not counted in `top_k`); "all" every one.
    `min_match` drops the candidates whose ITM probability is below it."""
    check_frames(frames)
    scores = shortlist.similarities if scores is None else scores
    order = sorted(
        range(len(shortlist.rows)),
        key=lambda i: (
            -float(scores[i]),
            -float(shortlist.similarities[i]),
            shortlist.paths[i],
            shortlist.time(i) or 0.0,
        ),
    )
    hits, videos_shown = [], set()
    for i in order:
        if threshold is not None and scores[i] < threshold:
            continue
        if shortlist.time(i) is not None and frames == "best":
            if shortlist.paths[i] in videos_shown:
                continue
            videos_shown.add(shortlist.paths[i])
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
                t=shortlist.time(i),
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
        return [
            Shortlist(q, r, s, reader.paths_for(r), _frame_times(reader, r))
            for q, r, s in zip(queries, rows, similarities)
        ]
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
        rows = subset[order]
        shortlists.append(Shortlist(query, rows, row_sims[order], reader.paths_for(rows), _frame_times(reader, rows)))
    return shortlists


def _frame_times(reader, rows: np.ndarray) -> list[float | None] | None:
    """The rows' video frame times; None when every row is a still image (the common case)."""
    times = reader.frame_times_for(rows)
    return times if any(t is not None for t in times) else None


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
        on_unreranked: UnrerankedCallback | None = None,
        lookahead: int = 0,
    ):
        self.reader = reader
        self.engine = engine
        self.batch_size = batch_size
        self.on_missing = on_missing or (lambda path, reason: None)
        self.on_note = on_note or (lambda message: None)  # talk for stderr: rerank estimates, budget cuts
        self.state_store = state_store
        self.progress = progress
        self.cancelled = cancelled or (lambda: False)
        self.on_unreranked = on_unreranked
        self.lookahead = lookahead  # candidates past the shortlist reported to on_unreranked (one more FAISS search)
        self._shortlisted: dict[tuple[str, float | None], int] = {}  # (path, frame time) -> row, last search's
        self._explainable: list[tuple[dict, dict]] = []

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
        frames: str = DEFAULT_FRAMES,
        on_update: UpdateCallback | None = None,
        explain: bool = False,
        min_match: float | None = None,
        explain_later: bool = False,
    ) -> list[list[Hit]]:
        """Hits per query, queries in input order, each ranked best first. A query is a text, or Terms (a text
        with negatives and example images: see terms.py). `shortlist`: cosine candidates to rerank (None: the
        default for the engine's device, rerank_budget.default_shortlist). `score` ranks reranked candidates
        (see blend_scores); "cosine", like rerank=False, skips the rerank. `rerank_budget` (seconds) reranks
        only the best candidates that fit and leaves the rest out (rerank_budget.py). `where` (a pyarrow
        expression on the index's columns) filters before the shortlist. `frames`: a video's best frame only
        ("best") or each of its frames ("all"). `on_update` (reranked searches only) sees the hits as they
        improve: the cosine shortlist's first (no threshold: it bounds the final score), then after each rerank
        chunk the reranked candidates best first with those still waiting after them in cosine order (`itm`
        None). The returned hits are the final order; the caller shows them last. `explain` gives each final hit
        an Explanation (where the query and each of its words matched: search/explain.py); it needs the rerank.
        `min_match` keeps only hits whose ITM probability is at least it (search/match.py); with `score="cosine"`
        the shortlist is then scored by ITM too, and still ranked by cosine. `explain_later` (with `explain`) keeps
        what explaining needs and returns the hits unexplained: `explained` then explains the ones shown (a few of
        them, after folding), so no other hit costs a pass of the fusion layers."""
        terms = [q if isinstance(q, Terms) else Terms(Weighted(q)) for q in queries]
        if not terms or any(not t.text.value.strip() for t in terms):
            raise UsageError("empty query: give some text to search for")
        if score not in SCORES:
            raise UsageError(f"`score` must be one of {', '.join(SCORES)}, not {score!r}")
        check_threshold(threshold)
        check_frames(frames)
        check_min_match(min_match, rerank=rerank)
        labels = [t.label for t in terms]
        shortlist = shortlist or default_shortlist(self.engine.device.type)
        reranked = rerank and (score != "cosine" or min_match is not None)
        if explain and not reranked:
            raise UsageError("`explain` needs the rerank (the fusion layers): drop `rerank=False` and `score=cosine`")
        vectors = self._query_vectors([t.shortlist_terms(reranked) for t in terms])
        shortlists = self._live_shortlists(labels, vectors, max(shortlist, top_k), under, where)
        if not reranked:
            return [rank_hits(s, None, top_k, threshold, frames=frames) for s in shortlists]
        clock = RerankClock(sum(len(s.rows) for s in shortlists), len(shortlists), rerank_budget, self.on_note)
        updates = _Updates(shortlists, top_k, on_update, frames)
        reranked_rows: set[int] = set()
        results = self._reranked(
            shortlists, terms, top_k, threshold, score, clock, updates, reranked_rows, frames, explain, min_match
        )
        if explain and not explain_later:
            results = self.explained(results)
        if clock.summary():
            self.on_note(clock.summary())
        if self.on_unreranked is not None:
            self._report_unreranked(labels, vectors, shortlists, reranked_rows, under, where)
        return results

    def _report_unreranked(self, labels, vectors, shortlists, reranked_rows: set[int], under, where) -> None:
        """Tell on_unreranked the candidates this search shortlisted (or would have, `lookahead` deeper) and did
        not rerank, best first, each once. The deeper look is its own FAISS search: the search's shortlist is
        never made deeper (an approximate index may order a deeper result differently)."""
        found = shortlists
        if self.lookahead > 0:
            size = max(len(s.rows) for s in shortlists) + self.lookahead
            found = cosine_shortlists(self.reader, labels, vectors, size, under, where)
        candidates = {}
        for shortlist in found:
            for i, (row, path) in enumerate(zip(shortlist.rows, shortlist.paths)):
                if int(row) not in reranked_rows:
                    candidates.setdefault((path, shortlist.time(i)), None)
        if candidates:
            self.on_unreranked(list(candidates))

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
        self,
        image_path: str,
        *,
        top_k: int = 10,
        threshold: float | None = None,
        under: str | None = None,
        where=None,
        frames: str = DEFAULT_FRAMES,
    ) -> list[Hit]:
        """Images nearest to `image_path` by ITC image embedding (no rerank: ITM scores text against images)."""
        check_threshold(threshold)
        check_frames(frames)
        try:
            pixels, _ = load_pixels(image_path, self.engine.preprocessing, draft=False)
        except ImageDecodeError as err:
            raise UsageError(f"`image` {err}") from None
        embedding = self.engine.encode_images(pixels[None])
        (found,) = self._live_shortlists([image_path], embedding, top_k, under, where)
        return rank_hits(found, None, top_k, threshold, frames=frames)

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
        # what stored_embeddings reads: the rows behind these hits, so folding them reads len(hits) rows
        self._shortlisted = {(s.paths[i], s.time(i)): int(row) for s in results for i, row in enumerate(s.rows)}
        return results

    def explained(self, results: list[list[Hit]]) -> list[list[Hit]]:
        """`results` (hits per query from the last search with `explain`, or some of them) with their
        explanations, computed from the states that search kept."""
        return [
            explain_hits(self.engine, text_states, hits, states)
            for hits, (text_states, states) in zip(results, self._explainable, strict=True)
        ]

    def stored_embeddings(self, hits: Sequence[Hit]) -> np.ndarray:
        """The stored image embeddings of `hits` (hits of this searcher's last search), aligned with them."""
        return self.reader.embeddings_for([self._shortlisted[hit.path, hit.t] for hit in hits])

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
        updates: _Updates,
        reranked_rows: set[int],
        frames: str = DEFAULT_FRAMES,
        explain: bool = False,
        min_match: float | None = None,
    ) -> list[list[Hit]]:
        self._explainable = []  # per query: its text states and the kept vision states (`explained`)
        uses = Counter(int(r) for s in shortlists for r in s.rows)
        tick = _Ticker(self.progress, total=clock.candidates)  # candidates, as the user counts them (`shortlist`)
        cache = VisionStateCache(self, uses)
        text_states = {}  # each distinct text (query or negative) runs the text tower once per call
        results = []
        for number, (shortlist, query) in enumerate(zip(shortlists, terms)):
            kept_parts, score_parts, position = [], [], 0
            kept_states = KeptStates(top_k, one_per_path=frames == "best") if explain else None
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
                    reranked_rows.update(int(r) for r in kept.rows)
                    if kept_states is not None:
                        chunk = (
                            blend_scores(score_parts[-1], kept.similarities) if score == "blend" else score_parts[-1]
                        )
                        keys = [(path, kept.time(n)) for n, path in enumerate(kept.paths)]
                        kept_states.offer(keys, chunk, kept.similarities, states)
                tick(size)
                position += size
                clock.record(size)
                if updates.wanted and position < len(shortlist.rows):
                    ranked = _ranked(
                        shortlist.query, kept_parts, score_parts, score, top_k, threshold, frames, min_match
                    )
                    updates.show(number, ranked + _waiting(shortlist, position, top_k, ranked, frames))
            hits = _ranked(shortlist.query, kept_parts, score_parts, score, top_k, threshold, frames, min_match)
            if kept_states is not None:
                self._explainable.append((self._text_states(text_states, query.text.value), kept_states.by_key()))
            results.append(hits)
            updates.done(number, results[-1])
        return results

    def _itm(self, text_states: dict, text: str, states: torch.Tensor) -> np.ndarray:
        return self.engine.itm_scores(self._text_states(text_states, text), states)

    def _text_states(self, text_states: dict, text: str):
        if text not in text_states:
            text_states[text] = self.engine.text_states(text)
        return text_states[text]


def _ranked(
    query: str,
    kept_parts,
    score_parts,
    score: str,
    top_k: int,
    threshold: float | None,
    frames: str,
    min_match: float | None = None,
) -> list[Hit]:
    """The reranked candidates so far (all of them: the final order), ranked as the search ranks them."""
    kept = _concatenated(query, kept_parts)
    itm = np.concatenate(score_parts) if score_parts else np.zeros(0, dtype=np.float32)
    # score "cosine" reaches here only for `min_match`: ranked by cosine (None), with the ITM it filters on
    scores = blend_scores(itm, kept.similarities) if score == "blend" else itm if score == "itm" else None
    return rank_hits(kept, scores, top_k, threshold, itm=itm, frames=frames, min_match=min_match)


def _waiting(shortlist: Shortlist, position: int, top_k: int, ranked: list[Hit], frames: str) -> list[Hit]:
    """The candidates not reranked yet (from `position` on), in cosine order, after the `ranked` ones, up to
    `top_k` in all; with frames="best", none of a video already shown."""
    if len(ranked) >= top_k:
        return []
    hits = rank_hits(shortlist.subset(range(position, len(shortlist.rows))), None, len(shortlist.rows), frames=frames)
    shown = {h.path for h in ranked if h.t is not None} if frames == "best" else set()
    hits = [h for h in hits if h.t is None or h.path not in shown][: top_k - len(ranked)]
    return [
        replace(h, rank=len(ranked) + number, shortlist_rank=position + h.shortlist_rank)
        for number, h in enumerate(hits, 1)
    ]


class _Updates:
    """Each query's hits as they improve, handed to an UpdateCallback: the cosine shortlist at once, then each
    query's partial rerank as its chunks finish (the queries not reranked yet keep their shortlist)."""

    def __init__(self, shortlists: list[Shortlist], top_k: int, callback: UpdateCallback | None, frames: str):
        self.callback = callback
        self.wanted = callback is not None
        self.current = [rank_hits(s, None, top_k, frames=frames) for s in shortlists] if callback else []
        if callback:
            callback([list(hits) for hits in self.current])

    def show(self, number: int, hits: list[Hit]) -> None:
        self.current[number] = hits
        self.callback([list(hits) for hits in self.current])

    def done(self, number: int, hits: list[Hit]) -> None:
        """A query's final order; shown only while later queries are still to come (the caller shows the end)."""
        if self.wanted and number < len(self.current) - 1:
            self.show(number, hits)


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
        None if all(p.times is None for p in parts) else [p.time(i) for p in parts for i in range(len(p.rows))],
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
        todo = {
            r: (p, shortlist.time(i))
            for i, (r, p) in enumerate(zip(rows, shortlist.paths))
            if r not in self.states and r not in self.failed
        }
        self._compute(todo)
        usable = [i for i, r in enumerate(rows) if r in self.states]
        stacked = torch.stack([self.states[rows[i]] for i in usable]) if usable else None
        for row in rows:
            self.uses[row] -= 1
            if self.uses[row] == 0:
                self.states.pop(row, None)
        return shortlist.subset(usable), stacked

    def _compute(self, paths_by_row: dict[int, tuple[str, float | None]]) -> None:
        """States of the rows' files (path, video frame time or None), decoded as the indexer decoded them."""
        engine, store = self.searcher.engine, self.searcher.state_store
        decoded = []
        for row, (file, time) in paths_by_row.items():
            path = state_key(file, time)
            stored = store.get(path) if store is not None else None
            if stored is not None:
                self.states[row] = stored
                continue
            try:
                # Draft JPEG decoding (DCT scaling, as at index time): ~9x faster to decode a large photo, ITM within
                # 0.01 of the full decode (docs/performance.md; tests/unit/search/test_terms.py checks the bound).
                pixels = load_file_pixels(file, engine.preprocessing, draft=RERANK_DRAFT_DECODE, frame_time=time)
                decoded.append((row, path, pixels))
            except ImageDecodeError as err:
                self.failed.add(row)
                self.searcher.on_missing(file, err.reason)
        size = self.searcher.batch_size
        for start in range(0, len(decoded), size):
            chunk = decoded[start : start + size]
            states = engine.vision_states(np.stack([pixels for _, _, pixels in chunk]))
            for (row, path, _), state in zip(chunk, states):
                self.states[row] = state
                if store is not None:
                    store.put(path, state)
