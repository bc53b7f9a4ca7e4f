"""The record a search produces, shared by ranking, output renderers and the HTML sheet."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hit:
    query: str  # the query text (or the query image's path for `--image`)
    rank: int  # 1-based rank after reranking
    path: str  # absolute path of the image, as stored in the index
    score: float  # what ranks the hit: ITM probability + cosine (blend), ITM alone, or the cosine (no rerank)
    similarity: float  # cosine similarity of the ITC embeddings
    shortlist_rank: int  # 1-based rank in the cosine shortlist, before reranking
    taken_at: str | None = None  # capture time (EXIF, ISO 8601), filled by filters.dated_hits
    # The ITM head's probability that image and text match (with negatives: ITM(text) x prod (1 - ITM(not))^w,
    # the number the rerank blends with the cosine); None when the hit was not reranked.
    itm: float | None = None
    # Near-duplicates folded into this hit (search/fold.py), best first: their paths; () when none or not folded.
    duplicates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.duplicates, tuple):  # a list, as JSON (a server's answer) carries it
            object.__setattr__(self, "duplicates", tuple(self.duplicates))
