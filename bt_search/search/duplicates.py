"""Groups of near-duplicates over a whole index (`bt-search duplicates`), for cleaning a library or deduplicating
a data set.

Each row asks the index's own nearest-neighbour search (the FAISS file, plus an exact scan of the rows it does
not cover yet) for its `neighbours` nearest rows, in batches; pairs at `threshold` or above are joined with
union-find. That costs N searches of small k, O(N·k) pairs in memory, never the N x N similarity matrix. A group
larger than k + 1 is still found whole when its members are chained through one another's neighbours. With an
approximate index (IVF, PQ) a pair the search misses is missed here too.

The same cosine as `query`'s folding (search/fold.FOLD_COSINE) decides by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bt_search.errors import UsageError
from bt_search.search.fold import FOLD_COSINE, check_fold_threshold

NEIGHBOURS = 8  # rows each row looks at: itself and 7 others
# IVF lists each row's search visits: a near-copy sits in its original's list or a neighbouring one, so a few
# suffice where a text query needs the tuned number (docs/performance.md, "Near-duplicates")
PROBES = 8
# An exact index (`flat`, which `auto` picks up to 100k rows, or none) searches O(N) per row, O(N²·D) in all.
# From this many rows `duplicates` clusters the embeddings into a temporary in-memory IVF instead (2√N lists,
# PROBES visited), so each row reads about PROBES / (2√N) of them.
TEMPORARY_IVF_ROWS = 20_000
BATCH = 4096  # rows searched at once (their embeddings and neighbours in memory)


@dataclass(frozen=True)
class DuplicateGroup:
    paths: tuple[str, ...]  # in path order; the first is the one a cleaner keeps, by default
    similarities: tuple[float, ...]  # each path's cosine to the first (1.0 for the first)


def duplicate_pairs(
    reader,
    *,
    threshold: float = FOLD_COSINE,
    neighbours: int = NEIGHBOURS,
    batch: int = BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, row ids) of the index's pairs at `threshold` or above among each row's `neighbours` nearest
    (each pair once, lower id first): N / `batch` calls of reader.search with k = `neighbours`."""
    check_fold_threshold(threshold)
    if neighbours < 2:
        raise UsageError(f"`neighbours` must be at least 2 (a row and one other), not {neighbours}")
    ids = reader.ids()
    search = lambda queries: reader.search(queries, neighbours, probes=PROBES)  # noqa: E731
    if searches_exactly(reader) and len(ids) >= TEMPORARY_IVF_ROWS:
        search = _temporary_ivf(reader, ids, neighbours, batch)
    firsts, seconds = [], []
    for start in range(0, len(ids), batch):
        rows = ids[start : start + batch]
        similarities, found = search(reader.embeddings_for(rows))
        close = (similarities >= threshold) & (found >= 0) & (found != rows[:, None])
        a = np.broadcast_to(rows[:, None], found.shape)[close]
        b = found[close]
        firsts.append(np.minimum(a, b))
        seconds.append(np.maximum(a, b))
        if progress is not None:
            progress(min(start + batch, len(ids)), len(ids))
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(np.stack([np.concatenate(firsts), np.concatenate(seconds)], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def searches_exactly(reader) -> bool:
    """Whether the index's own search reads every row (a `flat` FAISS file, or no ANN file at all)."""
    return not reader.uses_faiss_file or reader.manifest.get("index_type") in (None, "flat")


def _temporary_ivf(reader, ids: np.ndarray, neighbours: int, batch: int):
    """A search over an in-memory IVF-Flat of every row (row ids as FAISS ids), for an index with no ANN file."""
    import faiss

    dim = reader.identity.embedding_dim
    lists = max(1, int(2 * np.sqrt(len(ids))))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(ids, size=min(len(ids), lists * 39), replace=False)
    index.train(np.ascontiguousarray(reader.embeddings_for(np.sort(sample)), dtype=np.float32))
    for start in range(0, len(ids), batch):
        rows = ids[start : start + batch]
        index.add_with_ids(np.ascontiguousarray(reader.embeddings_for(rows), dtype=np.float32), rows)
    index.nprobe = PROBES

    def search(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        similarities, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), neighbours)
        return similarities, found

    return search


def union_groups(firsts: np.ndarray, seconds: np.ndarray) -> list[list[int]]:
    """The connected components (of two members or more) of the pairs' graph, each sorted, by first member."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(firsts.tolist(), seconds.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for x in parent:
        members.setdefault(root(x), []).append(x)
    return sorted((sorted(group) for group in members.values()), key=lambda group: group[0])


def duplicate_groups(
    reader,
    *,
    threshold: float = FOLD_COSINE,
    neighbours: int = NEIGHBOURS,
    batch: int = BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> list[DuplicateGroup]:
    """The index's groups of near-duplicates (stored ITC image embeddings at `threshold` cosine or above, joined
    through each row's `neighbours` nearest), largest first, then by first path."""
    components = union_groups(
        *duplicate_pairs(reader, threshold=threshold, neighbours=neighbours, batch=batch, progress=progress)
    )
    groups = []
    # the grouped rows' paths and embeddings, read a batch of rows at a time (one `take` each, not one a group)
    for start in range(0, sum(len(group) for group in components), batch):
        chunk = components_in(components, start, start + batch)
        rows = [row for group in chunk for row in group]
        paths, embeddings = reader.paths_for(rows), reader.embeddings_for(rows)
        at = 0
        for group in chunk:
            span = range(at, at + len(group))
            order = sorted(span, key=lambda i: paths[i])
            similarities = embeddings[order] @ embeddings[order[0]]
            groups.append(
                DuplicateGroup(tuple(paths[i] for i in order), tuple(round(float(s), 6) for s in similarities))
            )
            at += len(group)
    return sorted(groups, key=lambda g: (-len(g.paths), g.paths[0]))


def components_in(components: list[list[int]], start: int, stop: int) -> list[list[int]]:
    """The groups whose first member's position, counting every group's members in turn, is in [start, stop)."""
    out, position = [], 0
    for group in components:
        if start <= position < stop:
            out.append(group)
        position += len(group)
    return out


def group_records(groups: list[DuplicateGroup]):
    """One record per image of each group (the `duplicates` command's rows): group number (1-based), the group's
    size, the path, its cosine to the group's first path, and whether it is that first one (`keep`)."""
    for number, group in enumerate(groups, start=1):
        for position, (path, similarity) in enumerate(zip(group.paths, group.similarities)):
            yield {
                "group": number,
                "size": len(group.paths),
                "path": path,
                "similarity": similarity,
                "keep": position == 0,
            }
