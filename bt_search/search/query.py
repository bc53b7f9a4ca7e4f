"""One `query` as every caller states it (the CLI in-process, the server, Python), and the one function that
answers it, so a served answer and an in-process one are the same by construction.

`QueryRequest` holds everything that changes the hits: the query lines (terms.py syntax), shared terms, an
image for similar-image search, sizes, filters, score and order. It is plain data; the server builds one from
a request it has checked (serve/service.check_request).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bt_search import config
from bt_search.errors import ImageDecodeError, UsageError
from bt_search.search.hits import DEFAULT_FRAMES, Hit, check_frames
from bt_search.search.match import check_min_match
from bt_search.search.terms import Terms, parse_line, parse_query

# The fields that shape an image query (Searcher.similar_images takes top_k, threshold and under; the date
# filters and order apply as to text): what a client sends and a server accepts for one.
IMAGE_QUERY_OPTIONS = ("top_k", "under", "threshold", "after", "before", "sort", "frames", "fold", "min_match")


@dataclass(frozen=True)
class QueryRequest:
    queries: tuple[str, ...] = ()  # query lines; empty with `image`
    image: str | None = None  # search by this image instead (cosine, no rerank)
    nots: tuple[str, ...] = ()  # shared by every query line, TEXT::WEIGHT allowed
    likes: tuple[str, ...] = ()
    unlikes: tuple[str, ...] = ()
    top_k: int = config.DEFAULT_TOP_K
    shortlist: int | None = None  # None: rerank_budget.default_shortlist for the device
    rerank: bool = True
    rerank_budget: float | None = None
    threshold: float | None = None
    under: str | None = None  # a canonical folder (as the index stores paths)
    after: str | None = None  # YYYY-MM-DD
    before: str | None = None
    sort: str = "relevance"
    score: str = config.DEFAULT_SCORE
    frames: str = DEFAULT_FRAMES  # a video's best frame ("best") or each matching frame ("all"): hits.FRAMES
    fold: bool = True  # near-duplicates shown once, with "+N similar" (search/fold.py)
    min_match: float | None = None  # keep hits whose ITM probability is at least this (search/match.py)
    explain: bool = False  # each hit's Explanation (search/explain.py): needs the rerank, refused with `image`

    def __post_init__(self) -> None:
        if self.explain and self.image is not None:
            raise UsageError("`explain` shows where a text matched: it cannot explain a search by `image`")

    def terms(self) -> list[Terms]:
        """Each query line's terms, with the shared ones added."""
        if any(not query.strip() for query in self.queries):
            raise UsageError("empty query: give some text to search for")
        shared = parse_query("-", self.nots, self.likes, self.unlikes)
        return [parse_line(q).with_terms(shared.nots, shared.likes, shared.unlikes) for q in self.queries]

    def labels(self) -> list[str]:
        """How the hits of each query are named: its line as typed with the shared terms, or the image path."""
        return [self.image] if self.image is not None else [terms.label for terms in self.terms()]

    def for_server(self) -> QueryRequest:
        """This request as a server on this machine must receive it: every image path absolute (the server runs
        elsewhere), and the shared terms folded into each query line, written exactly."""
        image = None if self.image is None else os.path.abspath(self.image)
        under = None if self.under is None else os.path.abspath(self.under)
        lines = tuple(terms.line(os.path.abspath) for terms in self.terms())
        return replace(self, queries=lines, image=image, under=under, nots=(), likes=(), unlikes=())

    def image_paths(self) -> set[str]:
        """Every image file the request opens: the query image and the example images of its terms."""
        examples = {t.value for terms in self.terms() for t in (*terms.likes, *terms.unlikes)}
        return examples | ({self.image} if self.image is not None else set())

    def needs_vision(self) -> bool:
        """Whether answering runs the vision tower (rerank, an image query, or example images)."""
        uses_images = self.image is not None or bool(self.likes or self.unlikes)
        uses_images = uses_images or any(t.likes or t.unlikes for t in self.terms())
        return uses_images or (self.rerank and (self.score != "cosine" or self.min_match is not None))

    def date_filter(self):
        """The rows `after` and `before` admit (a pyarrow expression, None: all); checks `sort` and `frames` too, so
        a caller can refuse a bad request before any model loads."""
        from bt_search.search.filters import check_sort, date_filter, parse_day

        check_sort(self.sort)
        check_frames(self.frames)
        return date_filter(parse_day(self.after, "after"), parse_day(self.before, "before"))

    def check(self) -> None:
        """Refuse, before any model loads, what needs no model to refuse: `sort`, `after`, `before`, `min_match`, and
        an `image` that is missing or not an image (its header is read)."""
        self.date_filter()
        check_min_match(self.min_match, rerank=self.rerank, image=self.image is not None)
        if self.image is not None:
            from bt_search.media.images import check_image

            try:
                check_image(self.image)
            except ImageDecodeError as err:
                raise UsageError(f"`image` {err}") from None


def run_query(
    searcher: Any, request: QueryRequest, on_update: Callable[[list[list[Hit]]], None] | None = None
) -> list[list[Hit]]:
    """The hits of `request`, one list per query (one for an image query): shortlist, rerank, rank, fold
    near-duplicates, capture dates, order. The CLI in-process and the server both answer with this.

    `on_update` sees the hits before the answer, folded, dated and ordered as the answer is: for a reranked
    search the cosine shortlist first, then the partial reranks as chunks finish (Searcher.search's
    `on_update`). The answer itself is what this returns (a search without rerank has no update before it)."""
    from bt_search.search.filters import dated_hits

    def shown(results: list[list[Hit]]) -> list[list[Hit]]:
        if request.fold:
            results = _fold(searcher, results, request.top_k)
        return [dated_hits(hits, request.sort) for hits in results]

    where = request.date_filter()
    check_min_match(request.min_match, rerank=request.rerank, image=request.image is not None)
    update = None if on_update is None else (lambda partial: on_update(shown(partial)))
    if request.fold:
        results = _folded(searcher, request, where, update)
    else:
        results = _ranked(searcher, request, where, request.top_k, update)
    return [dated_hits(hits, request.sort) for hits in results]


def _ranked(
    searcher: Any, request: QueryRequest, where, top_k: int, on_update=None, explain_later: bool = False
) -> list[list[Hit]]:
    """The request's best `top_k` hits per query, unfolded."""
    if request.image is not None:
        return [
            searcher.similar_images(
                request.image,
                top_k=top_k,
                threshold=request.threshold,
                under=request.under,
                where=where,
                frames=request.frames,
            )
        ]
    return searcher.search(
        request.terms(),
        top_k=top_k,
        shortlist=request.shortlist,
        rerank=request.rerank,
        threshold=request.threshold,
        under=request.under,
        score=request.score,
        rerank_budget=request.rerank_budget,
        where=where,
        frames=request.frames,
        explain=request.explain,
        min_match=request.min_match,
        explain_later=explain_later,
        on_update=on_update,
    )


def _fold(searcher: Any, results: list[list[Hit]], top_k: int) -> list[list[Hit]]:
    from bt_search.search.fold import fold_hits

    # the embeddings of the rows the search found: folding reads len(hits) rows, never the path column
    return [fold_hits(hits, searcher.stored_embeddings(hits), top_k) for hits in results]


def _folded(searcher: Any, request: QueryRequest, where, on_update=None) -> list[list[Hit]]:
    """The request's hits with near-duplicates folded (search/fold.py), still `top_k` per query where that many
    distinct ones exist: every candidate the search ranks anyway (the shortlist) is folded, and when folding leaves
    fewer than `top_k` the search looks twice as deep, up to FOLD_DEPTH x `top_k` candidates."""
    from bt_search.search.fold import FOLD_DEPTH
    from bt_search.search.rerank_budget import default_shortlist

    top_k = request.top_k
    depth = top_k
    if request.image is None:  # a text query ranks its whole shortlist: folding it costs no more rerank
        depth = max(top_k, request.shortlist or default_shortlist(searcher.engine.device.type))
    deepest = max(depth, top_k * FOLD_DEPTH)
    while True:
        ranked = _ranked(searcher, request, where, depth, on_update, explain_later=request.explain)
        folded = _fold(searcher, ranked, top_k)
        short = any(len(f) < top_k and len(hits) >= depth for f, hits in zip(folded, ranked))
        if not short or depth >= deepest:
            return searcher.explained(folded) if request.explain else folded
        depth = min(depth * 2, deepest)
