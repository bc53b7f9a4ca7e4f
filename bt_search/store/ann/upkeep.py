"""finish()'s ANN step: keep, fold fresh rows into, or rebuild the ANN file (decisions: ann_upkeep.py).

A rebuild streams the live rows from the parts in bounded memory: one pass draws the training sample
(and the tuning queries), a second fills the index, the exact copy (IVF-SQ8, IVF-PQ) and the tuning queries'
exact top-k together. The search knobs are then tuned to the recall target and recorded, with the
recall they measured, in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bt_search.store.ann import faiss_index
from bt_search.store.ann.exact_copy import ExactCopyWriter, copy_chunks, exact_lookup, open_exact_copy
from bt_search.store.ann.policy import RECALL_AT, TUNING_QUERIES, normalise_choice, plan_upkeep
from bt_search.store.ann.tuning import (
    DEFAULT_RECALL_TARGET,
    ExactTopK,
    probe_queries,
    recall_at_k,
    tune_search,
)
from bt_search.store.compaction import write_ann_dead
from bt_search.store.manifest import file_name, live_count
from bt_search.store.parts import Snapshot

Chunks = Iterable[tuple[np.ndarray, np.ndarray]]
# Looser than probe_queries' default: at 64-d and 512-d these probes came out harder than the gap-shifted
# queries of tests/ann_data.py at every nprobe, so knobs tuned on them hold for text queries.
TEXT_QUERY_LOOSENESS = 2.0
TEXT_LIKE_QUERIES = TUNING_QUERIES - TUNING_QUERIES // 2  # the first ones; the rest are image-like
IMAGE_QUERY_OFFSET = 0.5  # an image-like tuning query: a sample image plus noise of this norm (cosine ~0.9)


def update_ann(directory: Path, manifest: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
    """The manifest after bringing the ANN file up to date with the live rows (new files written)."""
    choice = normalise_choice(manifest.get("index_choice") or "auto")
    budget = manifest.get("memory_budget") or faiss_index.memory_budget_from_env()
    live = live_count(manifest, len(snapshot.dead))
    plan = faiss_index.plan_index(live, snapshot.dim, budget, kind=None if choice == "auto" else choice)
    entry = manifest.get("ann")
    covered = entry["covered_below"] if entry else 0
    fresh = snapshot.where(["row_id"], min_row_id=covered).num_rows
    # Every dead row the ANN file may hold: its list, plus rows tombstoned since it was written.
    held_dead = np.union1d(snapshot.ann_dead, snapshot.dead[snapshot.dead < covered])
    decision = plan_upkeep(entry, plan, choice, fresh, len(held_dead))
    if decision.action == "rebuild":
        notes = {"choice": choice, "memory_budget": budget, "built_because": decision.reason}
        return _rebuild(directory, manifest, snapshot, plan, notes)
    if decision.action == "fold":
        return _fold(directory, manifest, snapshot, held_dead, fresh)
    if entry and len(held_dead) != len(snapshot.ann_dead):
        return write_ann_dead(directory, manifest, held_dead)
    return manifest


def _rebuild(
    directory: Path, manifest: dict[str, Any], snapshot: Snapshot, plan: faiss_index.IndexPlan, notes: dict[str, Any]
) -> dict[str, Any]:
    if plan.n_vectors == 0:
        return {**manifest, "ann": None, "index_type": None}
    rng = np.random.default_rng(int(manifest["next_row_id"]))  # the same rows give the same index
    tuned = plan.kind != "flat"  # exact search needs no knobs
    sample = _sample(snapshot.live_vectors(), plan.n_vectors, max(plan.train_size, TUNING_QUERIES * tuned), rng)
    chunks: Chunks = snapshot.live_vectors()
    copy_files, copy = None, None
    if plan.kind in faiss_index.REFINED_KINDS:
        copy_files = _copy_names(manifest)
        copy = ExactCopyWriter(directory, copy_files, plan.n_vectors, plan.dim)
        chunks = copy.add_chunks(chunks)
    truth = ExactTopK(_tuning_queries(sample, rng), min(RECALL_AT, plan.n_vectors)) if tuned else None
    if truth is not None:
        chunks = _observed(chunks, truth.add)
    index = faiss_index.build_index(plan, sample[: plan.train_size] if plan.needs_training else None, chunks)
    if copy is not None:
        copy.commit()
    params, recall = _tune(directory, index, truth, copy_files)
    name = file_name(manifest, "ann")
    faiss_index.write_index(index, directory / name)
    imbalance = faiss_index.list_imbalance(index)
    entry = {
        "file": name,
        "type": plan.kind,
        "factory": plan.factory,
        "rows": int(index.ntotal),
        "covered_below": int(manifest["next_row_id"]),
        "trained_rows": plan.n_vectors,
        "dead": 0,
        "dead_file": None,
        "exact_copy": copy_files,
        "params": params.to_dict(),
        "recall": recall,
        "imbalance": imbalance,
        "imbalance_at_build": imbalance,
        **notes,
    }
    return {**manifest, "ann": entry, "index_type": plan.kind, "next_file": manifest["next_file"] + 1}


def _fold(
    directory: Path, manifest: dict[str, Any], snapshot: Snapshot, held_dead: np.ndarray, fresh_rows: int
) -> dict[str, Any]:
    """Add the fresh rows to the existing index (its trained quantizer, its graph); drop dead rows where cheap."""
    entry = manifest["ann"]
    index = faiss_index.read_index(directory / entry["file"], mmap=False)
    fresh: Chunks = snapshot.live_vectors(min_row_id=entry["covered_below"])
    copy_files, copy = entry.get("exact_copy"), None
    if copy_files:
        old_ids, old_vectors = open_exact_copy(directory, copy_files)
        kept = ~np.isin(old_ids, held_dead)  # removed from the index below: no need to copy them on
        copy_files = _copy_names(manifest)
        copy = ExactCopyWriter(directory, copy_files, int(kept.sum()) + fresh_rows, snapshot.dim)
        for ids, vectors in copy_chunks(old_ids, old_vectors, kept):
            copy.add(ids, vectors)
        fresh = copy.add_chunks(fresh)
    for ids, vectors in fresh:
        faiss_index.add_vectors(index, vectors, ids)
    if copy is not None:
        copy.commit()
    still_dead = held_dead if not faiss_index.remove_vectors(index, held_dead) else np.zeros(0, np.int64)
    name = file_name(manifest, "ann")
    faiss_index.write_index(index, directory / name)
    entry = {
        **entry,
        "file": name,
        "rows": int(index.ntotal),
        "covered_below": int(manifest["next_row_id"]),
        "exact_copy": copy_files,
        "imbalance": faiss_index.list_imbalance(index),
    }
    manifest = {**manifest, "ann": entry, "next_file": manifest["next_file"] + 1}
    return write_ann_dead(directory, manifest, still_dead)


def _sample(chunks: Chunks, total: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` rows drawn uniformly without replacement from `total` streamed rows (one pass)."""
    if size == 0:
        return np.zeros((0, 0), np.float32)
    wanted = np.sort(rng.choice(total, size=min(size, total), replace=False))
    picked, seen = [], 0
    for _, vectors in chunks:
        inside = wanted[(wanted >= seen) & (wanted < seen + len(vectors))] - seen
        picked.append(np.array(vectors[inside], dtype=np.float32))
        seen += len(vectors)
    sample = np.concatenate(picked) if picked else np.zeros((0, 0), np.float32)
    return sample[rng.permutation(len(sample))]  # training takes a prefix: make any prefix uniform too


def _tuning_queries(sample: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Held-out queries of both kinds a search sees: text-like ones pushed out of the images' cone
    (`probe_queries`), and image-like ones (`--like`): sample images moved to a nearby new point."""
    text_like = probe_queries(sample, TEXT_LIKE_QUERIES, rng, looseness=TEXT_QUERY_LOOSENESS)
    image_count = TUNING_QUERIES - TEXT_LIKE_QUERIES
    anchors = sample[rng.choice(len(sample), size=image_count, replace=len(sample) < image_count)]
    noise = rng.standard_normal(anchors.shape).astype(np.float32)
    noise *= IMAGE_QUERY_OFFSET / np.linalg.norm(noise, axis=1, keepdims=True)
    image_like = anchors + noise
    image_like /= np.linalg.norm(image_like, axis=1, keepdims=True)
    return np.concatenate([text_like, image_like]).astype(np.float32)


def _observed(
    chunks: Chunks, observe: Callable[[np.ndarray, np.ndarray], None]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for ids, vectors in chunks:
        observe(ids, vectors)
        yield ids, vectors


def _tune(
    directory: Path, index: Any, truth: ExactTopK | None, copy_files: dict[str, str] | None
) -> tuple[faiss_index.SearchParams, dict[str, Any] | None]:
    """The cheapest knobs reaching the recall target on each kind of held-out query, and what they measured."""
    if truth is None:
        return faiss_index.SearchParams(), None  # exact search: nothing to measure
    lookup = exact_lookup(*open_exact_copy(directory, copy_files)) if copy_files else None
    groups = {"text_like": slice(0, TEXT_LIKE_QUERIES), "image_like": slice(TEXT_LIKE_QUERIES, None)}
    tuned = [
        tune_search(index, truth.queries[rows], truth.ids[rows], k=truth.k, exact_vectors=lookup)[0]
        for rows in groups.values()
    ]
    params = faiss_index.SearchParams(
        *(max(getattr(p, name) for p in tuned) for name in ("nprobe", "ef_search", "refine_factor"))
    )
    measured = {
        name: round(
            recall_at_k(
                faiss_index.search(index, truth.queries[rows], truth.k, params=params, exact_vectors=lookup)[1],
                truth.ids[rows],
            ),
            4,
        )
        for name, rows in groups.items()
    }
    recall = {
        "at": truth.k,
        "measured": min(measured.values()),
        **measured,
        "target": DEFAULT_RECALL_TARGET,
        "queries": len(truth.queries),
    }
    return params, recall


def _copy_names(manifest: dict[str, Any]) -> dict[str, str]:
    return {"ids_file": file_name(manifest, "ann-copy-ids"), "vectors_file": file_name(manifest, "ann-copy")}
