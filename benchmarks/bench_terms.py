"""How should `--not` act on ITM rerank? Alternatives measured on the demo model and sample_data.

Each caption c_i of image i becomes the query `c_i --not c_j`. With `--negative confuser` (default) image j
is the strongest confuser: the candidate other than i that plain ITM ranks highest in c_i's shortlist, so
c_j shares most of c_i's words (the hard case). With `--negative random` j is drawn at random (seeded): an
unrelated negative, which should cost the target nothing. A good rule keeps i on top (R@1) and pushes j out
of the top 5 (j-out@5). Rules over the same N shortlisted candidates:

- none:      ITM(c_i)                      (the negative ignored by the rerank)
- product:   ITM(c_i) · (1 − ITM(c_j))     (bt-search's rule: P(match c_i and not c_j), independence assumed)
- subtract:  ITM(c_i) − ITM(c_j)
- drop@0.5:  ITM(c_i), candidates with ITM(c_j) ≥ 0.5 removed

The shortlist is computed twice: from the positive text alone, and from normalize(t(c_i) − t(c_j)).

    python benchmarks/bench_terms.py --shortlist 20
    python benchmarks/bench_terms.py --shortlist 20 --negative random
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bt_search.engine.loading import load_engine
from bt_search.indexing.run import index_paths
from bt_search.media.images import load_pixels
from bt_search.search.evaluate import read_captions, recall_at_k
from bt_search.search.term_vectors import query_vector, rerank_with_negatives
from bt_search.store import IndexIdentity, IndexReader, IndexWriter

ROOT = Path(__file__).resolve().parent.parent
RULES = {
    "none": lambda pos, neg: pos,
    "product": lambda pos, neg: rerank_with_negatives(pos, neg[None], np.ones(1)),
    "subtract": lambda pos, neg: pos - neg,
    "drop@0.5": lambda pos, neg: np.where(neg >= 0.5, -np.inf, pos),
}


def rank_of(target: int, rows: np.ndarray, scores: np.ndarray) -> int | None:
    order = rows[np.argsort(-scores, kind="stable")]
    hits = np.flatnonzero(order == target)
    return int(hits[0]) + 1 if hits.size else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shortlist", type=int, default=20)
    parser.add_argument("--negative", choices=["confuser", "random"], default="confuser")
    args = parser.parse_args()
    engine = load_engine(str(ROOT / "sample_data" / "demo-model"), device="cpu")
    captions = read_captions(ROOT / "sample_data" / "images" / "captions.csv")
    work = Path(tempfile.mkdtemp(prefix="bt-terms-"))
    with IndexWriter.open(work / "index", IndexIdentity.of(engine)) as writer:
        index_paths([str(ROOT / "sample_data" / "images")], writer, engine, workers=0, batch_size=16)
    reader = IndexReader.open(work / "index")
    ids = reader.ids_under(str(ROOT / "sample_data" / "images"))
    id_paths = reader.paths_for(ids)
    row_of = {p: int(r) for p, r in zip(id_paths, ids)}
    position = {int(r): k for k, r in enumerate(ids)}
    pixels = np.stack([load_pixels(p, engine.preprocessing, draft=False)[0] for p in id_paths])
    all_states = engine.vision_states(pixels)

    def states(rows):
        return all_states[[position[int(r)] for r in rows]]

    texts = [c.text for c in captions]
    text_embeddings = engine.encode_texts(texts)
    text_states = [engine.text_states(t) for t in texts]

    results: dict[tuple[str, str], list] = {}
    rng = np.random.default_rng(0)
    for i, caption in enumerate(captions):
        target = row_of[caption.path]
        if args.negative == "random":
            confuser = int(rng.choice([r for r in ids if r != target]))
        else:
            _, rows = reader.search(text_embeddings[i : i + 1], args.shortlist)
            itm = engine.itm_scores(text_states[i], states(rows[0]))
            confuser = int(next(r for r in rows[0][np.argsort(-itm, kind="stable")] if r != target))
        j = next(k for k, c in enumerate(captions) if row_of[c.path] == confuser)
        for shortlist_name in ("positive", "difference"):
            vector = text_embeddings[i]
            if shortlist_name == "difference":
                vector = query_vector(text_embeddings[[i, j]], np.array([1.0, -1.0]))
            _, cand = reader.search(vector[None], args.shortlist)
            cand = cand[0]
            pos = engine.itm_scores(text_states[i], states(cand))
            neg = engine.itm_scores(text_states[j], states(cand))
            for rule, fn in RULES.items():
                scores = fn(pos, neg)
                kept = np.isfinite(scores)
                results.setdefault((shortlist_name, rule), []).append(
                    (rank_of(target, cand[kept], scores[kept]), rank_of(confuser, cand[kept], scores[kept]))
                )
    negative = (
        "its strongest ITM confuser's caption" if args.negative == "confuser" else "a random other image's caption"
    )
    print(f"{len(captions)} captions, N={args.shortlist}; query = caption --not ({negative})")
    print("| shortlist | rule | R@1 | R@5 | confuser out of top 5 |")
    print("| --- | --- | --- | --- | --- |")
    for (shortlist_name, rule), ranks in results.items():
        recall = recall_at_k([r for r, _ in ranks], (1, 5))
        out = np.mean([c is None or c > 5 for _, c in ranks])
        print(f"| {shortlist_name} | {rule} | {recall[1]:.3f} | {recall[5]:.3f} | {out:.3f} |")


if __name__ == "__main__":
    main()
