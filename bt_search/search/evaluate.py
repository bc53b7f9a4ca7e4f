"""Text-to-image retrieval evaluation with BridgeTower's own protocol: ITC top-N, then ITM over those N.

Every caption is a query whose correct answer is its own image. Recall@K is the share of captions whose image
ranks in the top K: once by cosine alone (the shortlist), once after ITM reranking of the N shortlisted
images. An image missing from the shortlist cannot be recovered by reranking, exactly as in the paper's
evaluation, so reranked recall is bounded by shortlist Recall@N.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bt_search.errors import UsageError
from bt_search.search.rerank_budget import default_shortlist

if TYPE_CHECKING:  # the searcher imports torch: `eval` checks its captions file before any model loads
    from bt_search.search.searcher import Searcher

KS = (1, 5, 10)


@dataclass(frozen=True)
class Caption:
    path: str  # absolute path of the image the caption describes
    text: str


@dataclass
class EvalReport:
    captions: int
    shortlist_size: int
    shortlist_recall: dict[int, float]
    reranked_recall: dict[int, float]
    shortlist_seconds_per_query: float
    reranked_seconds_per_query: float
    skipped_captions: int = 0
    failures: list[dict] = field(default_factory=list)  # captions whose image did not rank first
    blended_recall: dict[int, float] = field(default_factory=dict)  # --score blend over the same shortlist

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("shortlist_recall", "reranked_recall", "blended_recall"):
            data[key] = {f"R@{k}": v for k, v in data[key].items()}
        return data


def recall_at_k(ranks: Sequence[int | None], ks: Sequence[int] = KS) -> dict[int, float]:
    """Share of queries whose correct item has 1-based rank <= k (None: not found at all)."""
    if not ranks:
        return {k: 0.0 for k in ks}
    return {k: sum(1 for r in ranks if r is not None and r <= k) / len(ranks) for k in ks}


def read_captions(captions_file: str | os.PathLike, images_root: str | os.PathLike | None = None) -> list[Caption]:
    """CSV/TSV/JSONL with `file,caption`, or a Karpathy-split JSON (COCO/Flickr30K; its `test` split).

    Relative file names are taken relative to `images_root`, else to the captions file's folder.
    """
    source = Path(captions_file)
    if not source.is_file():
        raise UsageError(f"captions file not found: {source}")
    root = Path(images_root) if images_root else source.parent
    suffix = source.suffix.lower()
    if suffix == ".json":
        pairs = _karpathy_pairs(source)
    elif suffix == ".jsonl":
        pairs = _jsonl_pairs(source)
    elif suffix in (".csv", ".tsv"):
        pairs = _csv_pairs(source, "\t" if suffix == ".tsv" else ",")
    else:
        raise UsageError(f"{source}: captions must be .csv, .tsv, .jsonl or Karpathy-split .json")
    captions = [Caption(os.path.abspath(root / file), text.strip()) for file, text in pairs if text.strip()]
    if not captions:
        raise UsageError(f"{source} holds no captions")
    return captions


def _csv_pairs(source: Path, delimiter: str) -> list[tuple[str, str]]:
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
            raise UsageError(f"{source}: needs a header with columns file,caption")
        return [(row["file"], row["caption"]) for row in reader]


def _jsonl_pairs(source: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            pairs.append((record["file"], record["caption"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(f"{source}:{number}: expected a JSON object with file and caption") from None
    return pairs


def _karpathy_pairs(source: Path, split: str = "test") -> list[tuple[str, str]]:
    try:
        images = json.loads(source.read_text(encoding="utf-8"))["images"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UsageError(f"{source}: not a Karpathy-split JSON (needs an images list)") from None
    pairs = []
    for image in images:
        if image.get("split", split) != split:
            continue
        file = os.path.join(image.get("filepath", ""), image["filename"])
        pairs += [(file, sentence["raw"]) for sentence in image.get("sentences", [])]
    return pairs


def evaluate(
    searcher: Searcher, captions: Sequence[Caption], shortlist: int | None = None, max_failures: int = 50
) -> EvalReport:
    """Recall@1/5/10 for the cosine shortlist and for ITM rerank over it, and time per query for each.
    `shortlist`: N reranked (None: the default for the searcher's device, as `query` uses)."""
    shortlist = shortlist or default_shortlist(searcher.engine.device.type)
    indexed = searcher.reader.indexed_paths([c.path for c in captions])
    usable = [c for c in captions if c.path in indexed]
    if not usable:
        raise UsageError("none of the captioned images is in the index; index their folder first")
    queries = [c.text for c in usable]
    top = max(shortlist, max(KS))

    started = time.perf_counter()
    cosine = searcher.search(queries, top_k=top, shortlist=top, rerank=False)
    shortlist_seconds = time.perf_counter() - started
    started = time.perf_counter()
    reranked = searcher.search(queries, top_k=shortlist, shortlist=shortlist, rerank=True, score="itm")
    reranked_seconds = time.perf_counter() - started

    cosine_ranks = [_rank_of(c.path, hits) for c, hits in zip(usable, cosine)]
    reranked_ranks = [_rank_of(c.path, hits) for c, hits in zip(usable, reranked)]
    blended_ranks = [_blended_rank_of(c.path, hits) for c, hits in zip(usable, reranked)]
    failures = [
        {"caption": c.text, "expected": c.path, "rank": r, "winner": hits[0].path if hits else None}
        for c, r, hits in zip(usable, reranked_ranks, reranked)
        if r != 1
    ][:max_failures]
    return EvalReport(
        captions=len(usable),
        shortlist_size=shortlist,
        shortlist_recall=recall_at_k(cosine_ranks),
        reranked_recall=recall_at_k(reranked_ranks),
        blended_recall=recall_at_k(blended_ranks),
        shortlist_seconds_per_query=shortlist_seconds / len(usable),
        reranked_seconds_per_query=reranked_seconds / len(usable),
        skipped_captions=len(captions) - len(usable),
        failures=failures,
    )


def _rank_of(path: str, hits) -> int | None:
    return next((hit.rank for hit in hits if hit.path == path), None)


def _blended_rank_of(path: str, hits) -> int | None:
    """The rank `--score blend` gives, from the reranked hits (every shortlisted candidate, with both scores)."""
    from bt_search.search.searcher import blend_scores

    order = sorted(hits, key=lambda h: (-float(blend_scores(h.score, h.similarity)), -h.similarity, h.path))
    return next((rank for rank, hit in enumerate(order, start=1) if hit.path == path), None)


# ---------------------------------------------------------------- abstention (`eval --absent K`)

MIN_MATCH_LEVELS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass
class AbstentionReport:
    """How `min_match` P separates queries whose image is absent from the index from those whose image is there.

    Per P: `absent_refused`, the share of absent queries with no hit at ITM >= P (what `query --min-match P` answers
    with exit 6); `present_answered`, the share of present queries with at least one hit at ITM >= P; and
    `present_found`, the share whose own image is among the hits kept at P."""

    absent_images: int  # images held out of the search
    absent_queries: int
    present_queries: int
    shortlist_size: int
    levels: list[dict] = field(default_factory=list)
    skipped_captions: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def held_out(captions: Sequence[Caption], count: int) -> set[str]:
    """`count` captioned images spread evenly over their sorted paths, and every other image that shares a
    caption text with one of them (an absent query must have no image with its very caption left)."""
    images = sorted({c.path for c in captions})
    if not 0 < count < len(images):
        raise UsageError(f"`absent` must be from 1 to {len(images) - 1} (the captioned images less one), not {count}")
    chosen = {images[(i * len(images)) // count] for i in range(count)}
    texts = {c.text for c in captions if c.path in chosen}
    return chosen | {c.path for c in captions if c.text in texts}


def abstention_levels(
    absent_best: Sequence[float | None],
    present_best: Sequence[float | None],
    present_own: Sequence[float | None],
    levels: Sequence[float] = MIN_MATCH_LEVELS,
) -> list[dict]:
    """The table of AbstentionReport.levels from each query's best ITM probability (None: no hit at all) and each
    present query's own image's (None: not shortlisted). Pure arithmetic."""

    def share(values: Sequence[float | None], kept: bool, p: float) -> float:
        if not values:
            return 0.0
        return sum(1 for v in values if (v is not None and v >= p) == kept) / len(values)

    return [
        {
            "min_match": p,
            "absent_refused": share(absent_best, False, p),
            "present_answered": share(present_best, True, p),
            "present_found": share(present_own, True, p),
        }
        for p in levels
    ]


def evaluate_absent(
    searcher: Searcher,
    captions: Sequence[Caption],
    absent: int,
    shortlist: int | None = None,
    levels: Sequence[float] = MIN_MATCH_LEVELS,
) -> AbstentionReport:
    """Hold `absent` captioned images (held_out) out of the search, as if they were not indexed, rank every
    caption's shortlist by ITM, and tabulate per `min_match` level how often the queries of the held-out images
    are refused and the others still answered."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from bt_search.store.stored_paths import stored_paths

    shortlist = shortlist or default_shortlist(searcher.engine.device.type)
    indexed = searcher.reader.indexed_paths([c.path for c in captions])
    usable = [c for c in captions if c.path in indexed]
    if not usable:
        raise UsageError("none of the captioned images is in the index; index their folder first")
    held = held_out(usable, absent)
    where = ~pc.field("path").isin(pa.array(stored_paths(sorted(held)), pa.string()))
    hits = searcher.search(
        [c.text for c in usable], top_k=shortlist, shortlist=shortlist, rerank=True, score="itm", where=where
    )
    best = [max((h.itm for h in found), default=None) for found in hits]
    is_absent = [c.path in held for c in usable]
    own = [next((h.itm for h in found if h.path == c.path), None) for c, found in zip(usable, hits)]
    present = [i for i, a in enumerate(is_absent) if not a]
    return AbstentionReport(
        absent_images=len(held),
        absent_queries=sum(is_absent),
        present_queries=len(present),
        shortlist_size=shortlist,
        levels=abstention_levels(
            [b for b, a in zip(best, is_absent) if a], [best[i] for i in present], [own[i] for i in present], levels
        ),
        skipped_captions=len(captions) - len(usable),
    )
