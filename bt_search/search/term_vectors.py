"""The arithmetic of query terms (terms.py gives the syntax and the rules): query vectors, signed weights,
and the ITM score with negatives. Pure numpy."""

from __future__ import annotations

import numpy as np

from bt_search.errors import UsageError
from bt_search.search.terms import Terms


def query_vector(
    texts: np.ndarray,
    text_weights: np.ndarray,
    images: np.ndarray | None = None,
    image_weights: np.ndarray | None = None,
) -> np.ndarray:
    """normalize(Σ w·e) over unit embeddings; negative terms carry negative weights. -> [D] float32."""
    total = np.asarray(text_weights, dtype=np.float64) @ np.asarray(texts, dtype=np.float64)
    if images is not None and len(images):
        total = total + np.asarray(image_weights, dtype=np.float64) @ np.asarray(images, dtype=np.float64)
    norm = np.linalg.norm(total)
    if norm < 1e-9:
        raise UsageError("the query's terms cancel out (their weighted sum is zero); change a weight")
    return (total / norm).astype(np.float32)


def signed_text_terms(terms: Terms) -> tuple[list[str], np.ndarray]:
    """The texts of a query and their signed weights: positive TEXT first, then each `--not`."""
    texts = [terms.text] + list(terms.nots)
    return [t.value for t in texts], np.array([terms.text.weight] + [-t.weight for t in terms.nots])


def signed_image_terms(terms: Terms) -> tuple[list[str], np.ndarray]:
    images = list(terms.likes) + list(terms.unlikes)
    return [t.value for t in images], np.array([t.weight for t in terms.likes] + [-t.weight for t in terms.unlikes])


def rerank_with_negatives(positive: np.ndarray, negatives: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ITM(TEXT) · Π (1 − ITM(not))^w per candidate. positive [K], negatives [n, K], weights [n]."""
    score = np.asarray(positive, dtype=np.float64)
    for itm, weight in zip(negatives, weights):
        score = score * np.power(np.clip(1.0 - np.asarray(itm, dtype=np.float64), 0.0, 1.0), weight)
    return score.astype(np.float32)
