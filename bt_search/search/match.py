"""`min_match`: keep only hits whose ITM probability (the fusion head's "do image and text match") is at least P.

A plain rule, checked before any model loads: P is a probability, and it needs the ITM head to have run, so a
text query with the rerank on (any `score`: with `score="cosine"` the shortlist is still scored by ITM, and
ranked by cosine). An image query has no text to match, and `rerank=False` computes no ITM: both are refused
rather than answered with nothing.
"""

from __future__ import annotations

import math

from bt_search.errors import UsageError


def check_min_match(min_match: float | None, *, rerank: bool = True, image: bool = False) -> None:
    if min_match is None:
        return
    if not (type(min_match) in (int, float) and math.isfinite(min_match) and 0.0 <= min_match <= 1.0):
        raise UsageError(f"`min_match` must be a probability from 0 to 1, not {min_match}")
    if image:
        raise UsageError(
            "`min_match` applies to text queries (the ITM head scores a text against an image), not to `image`"
        )
    if not rerank:
        raise UsageError(
            "`min_match` keeps hits by their ITM probability, which `rerank=False` does not compute: drop one of them"
        )


def no_match(min_match: float | None, results) -> bool:
    """Whether a `min_match` left no hit for any query: `query` then exits EXIT_NO_MATCH."""
    return min_match is not None and not any(results)
