"""One `query` as every caller states it (the CLI in-process, the server, Python), and the one function that
answers it, so a served answer and an in-process one are the same by construction.

`QueryRequest` holds everything that changes the hits: the query lines (terms.py syntax), shared terms, an
image for similar-image search, sizes, filters, score and order. It is plain data: the server reads it from
JSON with `from_json`, which refuses any field of the wrong type or name with a UsageError naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from bt_search import config
from bt_search.errors import ImageDecodeError, UsageError
from bt_search.search.hits import Hit
from bt_search.search.terms import Terms, parse_line, parse_query


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

    def terms(self) -> list[Terms]:
        """Each query line's terms, with the shared ones added."""
        shared = parse_query("-", self.nots, self.likes, self.unlikes)
        return [parse_line(q).with_terms(shared.nots, shared.likes, shared.unlikes) for q in self.queries]

    def needs_vision(self) -> bool:
        """Whether answering runs the vision tower (rerank, an image query, or example images)."""
        uses_images = self.image is not None or bool(self.likes or self.unlikes)
        uses_images = uses_images or any(t.likes or t.unlikes for t in self.terms())
        return uses_images or (self.rerank and self.score != "cosine")

    def date_filter(self):
        """The rows `after` and `before` admit (a pyarrow expression, None: all); checks `sort` too, so a caller can
        refuse a bad request before any model loads."""
        from bt_search.search.filters import check_sort, date_filter, parse_day

        check_sort(self.sort)
        return date_filter(parse_day(self.after, "after"), parse_day(self.before, "before"))

    def check(self) -> None:
        """Refuse, before any model loads, what needs no model to refuse: `sort`, `after`, `before`, and an `image`
        that is missing or not an image (its header is read)."""
        self.date_filter()
        if self.image is not None:
            from bt_search.media.images import check_image

            try:
                check_image(self.image)
            except ImageDecodeError as err:
                raise UsageError(f"`image` {err}") from None

    def as_json(self) -> dict[str, Any]:
        return {field.name: _plain(getattr(self, field.name)) for field in fields(self)}

    @classmethod
    def from_json(cls, payload: Any) -> QueryRequest:
        """A request from decoded JSON; UsageError naming the first field that is unknown or of the wrong type."""
        if not isinstance(payload, dict):
            raise UsageError("a query request is a JSON object")
        known = {field.name: field for field in fields(cls)}
        unknown = sorted(set(payload) - set(known))
        if unknown:
            raise UsageError(f"unknown query field(s): {', '.join(unknown)}")
        values = {name: _checked(name, value) for name, value in payload.items()}
        return cls(**values)


_LISTS = ("queries", "nots", "likes", "unlikes")
_TEXTS = ("image", "under", "after", "before", "sort", "score")
_WHOLE = ("top_k", "shortlist")
_NUMBERS = ("rerank_budget", "threshold")


def _checked(name: str, value: Any) -> Any:
    """`value` for field `name`, or UsageError: the types JSON can carry, strings free of lone surrogates."""
    if name in _LISTS:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise UsageError(f"`{name}` must be a list of strings")
        return tuple(_text(name, item) for item in value)
    if value is None and name not in ("rerank", "sort", "score", "top_k"):
        return None
    if name in _TEXTS:
        if not isinstance(value, str):
            raise UsageError(f"`{name}` must be a string")
        return _text(name, value)
    if name in _WHOLE:
        if type(value) is not int or value < 1:
            raise UsageError(f"`{name}` must be a whole number >= 1")
        return value
    if name in _NUMBERS:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise UsageError(f"`{name}` must be a finite number")
        return float(value)
    if type(value) is not bool:  # rerank
        raise UsageError(f"`{name}` must be true or false")
    return value


def _text(name: str, value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"`{name}` holds a lone surrogate, which is not text") from None
    return value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def run_query(searcher: Any, request: QueryRequest) -> list[list[Hit]]:
    """The hits of `request`, one list per query (one for an image query): shortlist, rerank, rank, capture
    dates, order. The CLI in-process and the server both answer with this."""
    from bt_search.search.filters import dated_hits

    where = request.date_filter()
    if request.image is not None:
        results = [
            searcher.similar_images(
                request.image, top_k=request.top_k, threshold=request.threshold, under=request.under, where=where
            )
        ]
    else:
        results = searcher.search(
            request.terms(),
            top_k=request.top_k,
            shortlist=request.shortlist,
            rerank=request.rerank,
            threshold=request.threshold,
            under=request.under,
            score=request.score,
            rerank_budget=request.rerank_budget,
            where=where,
        )
    return [dated_hits(hits, request.sort) for hits in results]
