"""When the store's ANN file changes, and what its manifest entry says (pure; upkeep.py does the work).

The ANN file is derived data: the parts hold the embeddings, and the manifest's "ann" entry says which
rows the file covers and how to search it:

- rows with row_id >= `covered_below` are *fresh*: searched exactly from the parts until they are
  folded in (when there are more than FRESH_MAX_ROWS, or whenever the file is cheap to rewrite), so an
  incremental run that adds a few photos never rewrites a large ANN file;
- rows that died after they were added stay in the file, listed in the ANN's dead-id file and excluded at
  search with an IDSelector; a fold removes them where FAISS can (flat, IVF), HNSW keeps masking them;
- a rebuild happens only past `faiss_index.needs_rebuild`'s thresholds (tombstone share, growth since IVF
  training, list imbalance, a kind change after 10% growth) or when the user asks for another kind.

The kind follows `faiss_index.plan_index`: flat up to 100k rows, then IVF-Flat while the vectors fit the memory
budget, then IVF-SQ8 while 8-bit codes fit, then OPQ + IVF-PQ; the last two re-score a shortlist exactly
from a memory-mapped copy of the covered vectors (exact_copy.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bt_search.errors import UsageError
from bt_search.store.ann import faiss_index

INDEX_CHOICES = ("auto", *faiss_index.KINDS)
OLD_KIND_NAMES = {"ivf": "ivf_flat"}  # format 2 indexes of bt-search 0.3 say "ivf"

FRESH_MAX_ROWS = 10_000  # more fresh rows than this: fold them into the ANN file
CHEAP_REWRITE_BYTES = 64 << 20  # ANN data smaller than this is rewritten on every finish()
RECALL_AT = 50  # the shortlist size the search knobs are tuned for (bt-search's largest default)
TUNING_QUERIES = 200


def normalise_choice(choice: str) -> str:
    """A user's --index-type as a kind name ("ivf" is the old name of ivf_flat); UsageError if unknown."""
    choice = OLD_KIND_NAMES.get(choice, choice)
    if choice not in INDEX_CHOICES:
        raise UsageError(f"unknown index type {choice!r}; expected one of {', '.join(INDEX_CHOICES)}")
    return choice


def choose_index_type(n_vectors: int, dim: int = 512, memory_budget: int | None = None) -> str:
    """The kind `auto` picks for `n_vectors` rows of `dim` floats under the memory budget."""
    budget = faiss_index.memory_budget_from_env() if memory_budget is None else memory_budget
    return faiss_index.plan_index(n_vectors, dim, budget).kind


@dataclass(frozen=True)
class Upkeep:
    action: str  # "rebuild", "fold" (add fresh rows, drop dead where cheap) or "keep"
    reason: str = ""  # why a rebuild


def plan_upkeep(
    entry: dict[str, Any] | None, plan: faiss_index.IndexPlan, choice: str, fresh: int, dead: int
) -> Upkeep:
    """What finish() does to the ANN file described by `entry`, given the plan for today's live rows.

    `choice`: the user's index type ("auto" or a kind); `fresh`: live rows the file does not cover;
    `dead`: rows it holds that are no longer live.
    """
    if plan.n_vectors == 0:
        return Upkeep("keep") if entry is None else Upkeep("rebuild", "no live rows")
    if entry is None:
        return Upkeep("rebuild", "no ANN file yet")
    kind = OLD_KIND_NAMES.get(entry["type"], entry["type"])
    if "params" not in entry:
        return Upkeep("rebuild", "built by an older bt-search, without tuned search knobs")
    if kind != plan.kind and (choice != "auto" or entry.get("choice", "auto") != "auto"):
        return Upkeep("rebuild", f"index type {choice} was chosen")  # auto alone waits for growth below
    stats = faiss_index.AnnStats(
        kind,
        entry["rows"] + fresh,
        dead,
        entry["trained_rows"],
        plan.kind,
        entry.get("imbalance"),
        entry.get("imbalance_at_build"),
    )
    reason = faiss_index.needs_rebuild(stats)
    if reason:
        return Upkeep("rebuild", reason)
    cheap = (entry["rows"] + fresh) * plan.dim * 4 <= CHEAP_REWRITE_BYTES
    if fresh > FRESH_MAX_ROWS or (cheap and (fresh or dead > entry["dead"])):
        return Upkeep("fold")
    return Upkeep("keep")


def search_params(entry: dict[str, Any] | None, index: Any) -> faiss_index.SearchParams:
    """The knobs recorded at build time; for a file from before tuning, the settings it was built for."""
    if entry and "params" in entry:
        return faiss_index.SearchParams.from_dict(entry["params"])
    ivf = faiss_index.ivf_part(index)
    if ivf is not None:
        return faiss_index.SearchParams(nprobe=min(ivf.nlist, max(16, -(-ivf.nlist // 8))))
    return faiss_index.SearchParams(ef_search=256)
