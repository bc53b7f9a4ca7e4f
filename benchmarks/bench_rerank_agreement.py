"""Does a reduced-precision rerank rank as fp32 does? `eval` recall and shortlist order, int8 (and bf16) vs fp32.

On the demo model and sample_data (240 captions, each naming its image): recall at 1/5/10 of the cosine
shortlist, ITM and the default blend, as `bt-search eval --shortlist N` computes it, at each precision; then,
per caption, the same cosine shortlist of N reranked by ITM at each precision against fp32: Kendall tau of
the two ITM orders, whether the top-1 agrees (ITM alone and the default blend), and max |ITM − ITM(fp32)|.
The shortlist is the same at every precision (embeddings stay fp32).

    python benchmarks/bench_rerank_agreement.py --shortlist 20 --precisions fp32 int8 auto
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bt_search.engine.loading import load_engine
from bt_search.indexing.run import index_paths
from bt_search.search.evaluate import KS, read_captions, recall_at_k
from bt_search.search.open import open_searcher
from bt_search.search.searcher import blend_scores
from bt_search.store import IndexIdentity, IndexWriter

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / "sample_data" / "demo-model"
IMAGES = REPO / "sample_data" / "images"


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a of two score lists over the same items."""
    n, total = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            total += ((a[i] > a[j]) - (a[i] < a[j])) * ((b[i] > b[j]) - (b[i] < b[j]))
    return total / (n * (n - 1) / 2) if n > 1 else 1.0


def rank(path: str, scores: dict[str, float]) -> int | None:
    """1-based rank of `path` by score (ties by path, as the searcher breaks them), None if not shortlisted."""
    order = sorted(scores, key=lambda p: (-scores[p], p))
    return order.index(path) + 1 if path in scores else None


def top(scores: dict[str, float]) -> str:
    return max(scores, key=lambda path: (scores[path], path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shortlist", type=int, default=20)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "auto"])
    args = parser.parse_args()
    load_before = os.getloadavg()
    captions = read_captions(IMAGES / "captions.csv")
    work = Path(tempfile.mkdtemp(prefix="bt-bench-agree-"))
    engine = load_engine(str(DEMO_MODEL), device="cpu", precision="fp32")
    with IndexWriter.open(work / "index", IndexIdentity.of(engine)) as writer:
        index_paths([str(IMAGES)], writer, engine, batch_size=8, workers=0)
    queries = [c.text for c in captions]
    recalls, itm, blend = {}, {}, {}
    for precision in ["fp32"] + [p for p in args.precisions if p != "fp32"]:
        searcher = open_searcher(work / "index", str(DEMO_MODEL), device="cpu", precision=precision)
        hits = searcher.search(queries, top_k=args.shortlist, shortlist=args.shortlist, score="itm")
        itm[precision] = [{h.path: h.score for h in per_query} for per_query in hits]
        blend[precision] = [
            {h.path: float(blend_scores(h.score, h.similarity)) for h in per_query} for per_query in hits
        ]
        cosine = [{h.path: h.similarity for h in per_query} for per_query in hits]
        dtype = str(searcher.engine.rerank_dtype).removeprefix("torch.")
        recalls[precision] = (
            dtype,
            [
                recall_at_k([rank(c.path, s) for c, s in zip(captions, scores)])
                for scores in (cosine, itm[precision], blend[precision])
            ],
        )
        print(f"{precision} done", file=sys.stderr, flush=True)
    print(
        f"demo model, {len(captions)} captions, N={args.shortlist}, load average before/after "
        f"{' '.join(f'{x:.2f}' for x in load_before)} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print("precision (rerank dtype) | cosine R@1/5/10 | ITM R@1/5/10 | blend R@1/5/10")
    for precision, (dtype, rows) in recalls.items():
        cells = " | ".join(" / ".join(f"{r[k]:.3f}" for k in KS) for r in rows)
        print(f"{precision} ({dtype}) | {cells}")
    for precision in itm:
        if precision == "fp32":
            continue
        taus, deltas = [], []
        for ours, ref in zip(itm[precision], itm["fp32"]):
            paths = sorted(ref)
            assert sorted(ours) == paths, "the shortlist differs: embeddings are not fp32's"
            taus.append(kendall_tau([ours[p] for p in paths], [ref[p] for p in paths]))
            deltas.append(max(abs(ours[p] - ref[p]) for p in paths))
        same_itm = sum(top(a) == top(b) for a, b in zip(itm[precision], itm["fp32"]))
        same_blend = sum(top(a) == top(b) for a, b in zip(blend[precision], blend["fp32"]))
        print(
            f"{precision} vs fp32 over {len(taus)} shortlists of {args.shortlist}: Kendall tau of the ITM order "
            f"median {statistics.median(taus):.3f}, mean {statistics.mean(taus):.3f}, min {min(taus):.3f}; "
            f"top-1 agrees {same_itm}/{len(taus)} (ITM), {same_blend}/{len(taus)} (blend); "
            f"max |ITM - fp32| {max(deltas):.4f} (median per shortlist {statistics.median(deltas):.4f})"
        )


if __name__ == "__main__":
    sys.exit(main())
