"""Synthetic embeddings for ANN tests and benchmarks: clustered "image" vectors and gap-shifted "text" queries.

CLIP-like joint spaces put images and texts in two separate cones (the modality gap, "Mind the Gap",
Liang et al. 2022; clip-retrieval issue #76): a text query is offset from the images it describes by a
roughly constant gap vector, plus the looseness of a caption (matched cosine ~0.3-0.5, not ~0.9).
An index tuned on image neighbourhoods can lose recall for such queries, so we test both kinds.
"""

from __future__ import annotations

import numpy as np

GAP_SEED = 76  # the gap direction is a property of the embedding space, fixed for all calls


def unit_rows(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=1, keepdims=True)).astype(np.float32)


def image_mean_direction(dim: int) -> np.ndarray:
    return unit_rows(np.random.default_rng(GAP_SEED + 1).standard_normal((1, dim)))[0]


def clustered_image_vectors(
    n: int,
    dim: int,
    rng: np.random.Generator,
    *,
    n_clusters: int | None = None,
    spread: float = 0.9,
) -> np.ndarray:
    """`n` unit vectors around `n_clusters` centres of uneven size, all in one cone (shared mean)."""
    n_clusters = n_clusters or max(8, n // 200)
    centres = unit_rows(0.6 * image_mean_direction(dim) + unit_rows(rng.standard_normal((n_clusters, dim))))
    weights = rng.dirichlet(np.full(n_clusters, 0.7))  # uneven clusters, as real collections have
    members = rng.choice(n_clusters, size=n, p=weights)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    return unit_rows(centres[members] + noise)


def gap_direction(dim: int) -> np.ndarray:
    """The offset from the image cone to the text cone: fixed, orthogonal to the image mean."""
    raw = np.random.default_rng(GAP_SEED).standard_normal(dim)
    mean = image_mean_direction(dim)
    raw -= (raw @ mean) * mean
    return (raw / np.linalg.norm(raw)).astype(np.float32)


def gap_shifted_queries(
    image_vectors: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    offset: float = 1.0,
    looseness: float = 0.8,
) -> np.ndarray:
    """`n` text-like queries: a random image moved by the gap vector plus caption looseness.

    offset: length of the gap vector; looseness: length of the isotropic "what the caption leaves out" part.
    Defaults give a cosine of ~0.6 between a query and the image it was drawn from, and ~0.25-0.45 to its
    top-50 images.
    """
    dim = image_vectors.shape[1]
    anchors = image_vectors[rng.choice(len(image_vectors), size=n, replace=len(image_vectors) < n)]
    loose = unit_rows(rng.standard_normal((n, dim))) * looseness
    return unit_rows(anchors + offset * gap_direction(dim) + loose)


def image_like_queries(image_vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` queries that look like the images: a random image, slightly perturbed."""
    dim = image_vectors.shape[1]
    anchors = image_vectors[rng.choice(len(image_vectors), size=n, replace=len(image_vectors) < n)]
    return unit_rows(anchors + 0.3 * unit_rows(rng.standard_normal((n, dim))))


def exact_top_k(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the exact inner-product top-k (numpy, the oracle)."""
    scores = queries @ vectors.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[top]
