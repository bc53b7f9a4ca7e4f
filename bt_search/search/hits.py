"""The record a search produces, shared by ranking, output renderers and the HTML sheet."""

from __future__ import annotations

from dataclasses import dataclass

from bt_search.errors import UsageError

# What a query shows of a video: its best frame per query ("best": a video's other frames are left out and do
# not count in top_k), or each frame that ranks ("all").
FRAMES = ("best", "all")
DEFAULT_FRAMES = "best"


def check_frames(frames: str) -> None:
    if frames not in FRAMES:
        raise UsageError(f"`frames` must be {' or '.join(FRAMES)}, not {frames!r}")


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
    t: float | None = None  # a video's frame: its time in seconds (`path` is the video); None for a still image
