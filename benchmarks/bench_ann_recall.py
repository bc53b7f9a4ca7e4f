"""Recall of approximate FAISS indexes for text queries versus image queries (the modality gap), one run.

Text embeddings sit in a different region of the joint space than image embeddings, so graph/cluster
indexes tuned on image neighbourhoods can lose text-query recall. This embeds a synthetic collection drawn by
the demo generator with the shipped demo model, writes it through the store (`IndexWriter`) once per ANN
kind, so each index is built and tuned as bt-search builds it, and prints the overlap of each
`IndexReader.search` top-k with the exact top-k (recall@k), for caption queries and for image queries.

    python benchmarks/bench_ann_recall.py --images 20000 --queries 500 --k 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bt_search.engine.loading import load_engine  # noqa: E402
from bt_search.media.images import preprocess  # noqa: E402
from bt_search.store import ImageRow, IndexIdentity, IndexReader, IndexWriter  # noqa: E402
from bt_search_dev.demo_data import random_scene, render  # noqa: E402


def embed_collection(engine, count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.Generator(np.random.PCG64(seed))
    scenes = [random_scene(rng) for _ in range(count)]
    embeddings = []
    for start in range(0, count, 256):
        pixels = np.stack([preprocess(render(s), engine.preprocessing) for s in scenes[start : start + 256]])
        embeddings.append(engine.encode_images(pixels))
    return np.concatenate(embeddings), [s.caption for s in scenes]


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--model", default=str(ROOT / "sample_data" / "demo-model"))
    args = parser.parse_args()

    engine = load_engine(args.model, device="cpu")
    started = time.perf_counter()
    images, captions = embed_collection(engine, args.images, seed=7)
    print(f"embedded {args.images} images in {time.perf_counter() - started:.0f} s")
    text_queries = engine.encode_texts(captions[: args.queries])
    image_queries = images[: args.queries]
    truth = {
        name: np.argsort(-(q @ images.T), axis=1)[:, : args.k]
        for name, q in (("text", text_queries), ("image", image_queries))
    }
    gap = float(np.mean(image_queries @ text_queries.T).round(3))
    print(
        f"modality gap: mean image-text cosine {gap}, "
        f"mean text-text {float(np.mean(text_queries @ text_queries.T)):.3f}, "
        f"mean image-image {float(np.mean(image_queries @ image_queries.T)):.3f}"
    )
    print(
        f"{'index':8} {'build s':>8} {'text recall@' + str(args.k):>18} {'image recall@' + str(args.k):>19} "
        f"{'ms/query':>9}  tuned at build"
    )
    rows = [ImageRow(f"/demo/{i:07d}.png", 1, 1, f"{i:064x}", 64, 64, vector) for i, vector in enumerate(images)]
    for kind in ("flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw"):
        with tempfile.TemporaryDirectory() as directory:
            started = time.perf_counter()
            with IndexWriter.open(directory, IndexIdentity.of(engine)) as writer:
                writer.commit(rows)
                writer.finish(kind)
            built = time.perf_counter() - started
            reader = IndexReader.open(directory)
            started = time.perf_counter()
            found = {
                name: reader.search(q, args.k)[1] for name, q in (("text", text_queries), ("image", image_queries))
            }
            per_query = (time.perf_counter() - started) / (2 * args.queries) * 1000
            entry = reader.manifest["ann"]
            tuned = {
                key: value for key, value in entry["params"].items() if value > (key == "refine_factor")
            } or "exact"
            print(
                f"{kind:8} {built:8.2f} {recall_at_k(found['text'], truth['text']):18.3f} "
                f"{recall_at_k(found['image'], truth['image']):19.3f} {per_query:9.3f}  {tuned}"
                + (f", held-out recall {entry['recall']['measured']:.3f}" if entry.get("recall") else "")
            )


if __name__ == "__main__":
    main()
