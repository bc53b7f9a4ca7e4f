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
    explanation: Explanation | None = None  # where the query matched (`explain=True`); None otherwise
    # Near-duplicates folded into this hit (search/fold.py), best first: their paths; () when none or not folded.
    duplicates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.duplicates, tuple):  # a list, as JSON (a server's answer) carries it
            object.__setattr__(self, "duplicates", tuple(self.duplicates))


@dataclass(frozen=True)
class Explanation:
    """Where a reranked hit matched its query: relevance heatmaps over the image, from the fusion layers'
    text-to-image attention (search/explain.py computes them). Maps are row-major grids of the vision tower's
    patches, scaled so each map's peak is 1."""

    method: str  # "attention" (the default), "gradient" or "rollout": search/explain.py
    grid: tuple[int, int]  # (rows, columns) of every map
    # The part of the image the maps cover, as fractions of its width and height (x0, y0, x1, y1): the model's
    # centre crop (beyond 0..1 where the crop was padded).
    window: tuple[float, float, float, float]
    query: tuple[float, ...]  # the whole query (the text [CLS] token's row)
    words: tuple[tuple[str, tuple[float, ...]], ...] = ()  # each content word's map, in query order

    def word_map(self, word: str) -> tuple[float, ...] | None:
        """The map of `word` (case-insensitive), None when it is not one of the explained words."""
        return next((values for name, values in self.words if name == word.lower()), None)

    @classmethod
    def from_json(cls, data: dict) -> Explanation:
        """The explanation from its JSON form (what dataclasses.asdict and json make of it)."""
        return cls(
            method=data["method"],
            grid=tuple(data["grid"]),
            window=tuple(data["window"]),
            query=tuple(data["query"]),
            words=tuple((name, tuple(values)) for name, values in data["words"]),
        )


def hit_from_json(data: dict) -> Hit:
    """A Hit from its JSON form (a server's answer), its explanation rebuilt."""
    explanation = data.get("explanation")
    return Hit(**{**data, "explanation": None if explanation is None else Explanation.from_json(explanation)})
