"""Near-duplicates folded: hits whose stored ITC image embeddings are nearly identical (a re-encoded, resized or
slightly cropped copy) shown once, as the best of them with the others listed (`Hit.duplicates`).

FOLD_COSINE was chosen by measurement (benchmarks/bench_fold_threshold.py; docs/performance.md, "Near-duplicates"):
with the demo model every JPEG re-encode (quality 30 and up) and every resize of a scene stays above 0.99, while
distinct renders of the same caption reach it in 1 case in 25. Pure functions (run_query hands them the hits'
stored embeddings: Searcher.stored_embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from bt_search.errors import UsageError
from bt_search.search.hits import Hit

FOLD_COSINE = 0.98  # cosine of two stored image embeddings at and above which they are one picture
# How deep `query` looks for distinct hits when folding leaves fewer than `top_k`: at most this many times
# `top_k` candidates (or the shortlist, when that is deeper), so a library of copies cannot make a query read
# the whole index.
FOLD_DEPTH = 4


def check_fold_threshold(threshold: float) -> None:
    if not (isinstance(threshold, int | float) and -1.0 <= threshold <= 1.0):
        raise UsageError(f"`threshold` must be a cosine from -1 to 1, not {threshold}")


def fold_groups(embeddings: np.ndarray, threshold: float = FOLD_COSINE) -> list[list[int]]:
    """Rows of `embeddings` (unit vectors, best first) in groups: each row joins the group of the most similar
    earlier leader at `threshold` or above, else leads a new one. Groups in leader order, members in row order.
    Greedy by leader, not transitive: a chain of small changes never folds two pictures that differ a lot."""
    groups: list[list[int]] = []
    leaders: list[int] = []
    for row in range(len(embeddings)):
        if leaders:
            similarities = embeddings[leaders] @ embeddings[row]
            best = int(np.argmax(similarities))
            if similarities[best] >= threshold:
                groups[best].append(row)
                continue
        leaders.append(row)
        groups.append([row])
    return groups


def fold_hits(hits: Sequence[Hit], embeddings: np.ndarray, top_k: int, threshold: float = FOLD_COSINE) -> list[Hit]:
    """The best hit of each group of near-duplicates (fold_groups over the hits' embeddings, aligned with
    `hits`, best first), with the others' paths in `duplicates`, ranked 1.. again, at most `top_k`."""
    folded = []
    for group in fold_groups(embeddings, threshold)[:top_k]:
        best = hits[group[0]]
        others = tuple(path for i in group[1:] for path in (hits[i].path, *hits[i].duplicates))
        folded.append(replace(best, rank=len(folded) + 1, duplicates=(*best.duplicates, *others)))
    return folded
