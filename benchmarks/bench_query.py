"""Per-query latency: bt-search (no-rerank; rerank N; a batch of queries) against the HF-docs loop, in one run.

HF-docs loop: for each query, `BridgeTowerProcessor` + `BridgeTowerForImageAndTextRetrieval` over its N
shortlisted (query, image) pairs (batched per query, images decoded from disk), score =
softmax(logits)[:, 1]. bt-search: text tower once per query, vision tower once per distinct candidate,
fusion-only ITM per pair. Same base-shaped random checkpoint, same index, same shortlists. Also prints the
cold start (model load + first query) of both modes, each in a fresh process.

    python benchmarks/bench_query.py --images 40 --shortlist 20 --queries 10
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import write_photos  # noqa: E402
from common import base_shaped_checkpoint, timed  # noqa: E402

from bt_search.indexer import identity_for, index_paths  # noqa: E402
from bt_search.loading import load_engine  # noqa: E402
from bt_search.search import Searcher  # noqa: E402
from bt_search.store import IndexReader, IndexWriter  # noqa: E402

QUERIES = [
    "a photo of two cats sleeping on a couch", "a red circle left of a blue square", "people walking on a beach",
    "a bowl of fruit on a wooden table", "a dog catching a frisbee", "a city street at night",
    "a plate of pasta", "mountains under a cloudy sky", "a child riding a bicycle", "a bird on a branch",
]


def cold_start(index_dir: Path, extra: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bt_search", "query", QUERIES[0], "--index", str(index_dir), "--device", "cpu", *extra],
        check=True, capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--shortlist", type=int, default=20)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    from PIL import Image
    from transformers import BridgeTowerForImageAndTextRetrieval, BridgeTowerProcessor

    checkpoint = base_shaped_checkpoint()
    work = Path(tempfile.mkdtemp(prefix="bt-bench-q-"))
    write_photos(work / "photos", args.images)
    engine = load_engine(str(checkpoint), device=args.device, precision=args.precision)
    with IndexWriter.open(work / "index", identity_for(engine)) as writer:
        index_paths([str(work / "photos")], writer, engine, batch_size=8, workers=1)
    reader = IndexReader.open(work / "index")
    searcher = Searcher(reader, engine, batch_size=8)
    processor = BridgeTowerProcessor.from_pretrained(str(checkpoint))
    retrieval = BridgeTowerForImageAndTextRetrieval.from_pretrained(str(checkpoint), dtype=engine.dtype).to(engine.device).eval()
    queries = QUERIES[: args.queries]
    n = args.shortlist

    @torch.inference_mode()
    def hf_docs(batch: list[str]) -> None:
        shortlists = reader.search(engine.encode_texts(batch), n)[1]
        for query, rows in zip(batch, shortlists):
            images = [Image.open(path).convert("RGB") for path in reader.paths_for(rows)]
            inputs = processor(images=images, text=[query] * len(images), padding=True, return_tensors="pt")
            torch.softmax(retrieval(**inputs.to(engine.device)).logits.float(), dim=-1)[:, 1].cpu()

    one = queries[:1]
    t_norerank = timed(lambda: searcher.search(one, top_k=10, shortlist=n, rerank=False), repeat=3)
    t_rerank = timed(lambda: searcher.search(one, top_k=10, shortlist=n))
    t_hf_one = timed(lambda: hf_docs(one))
    t_batch = timed(lambda: searcher.search(queries, top_k=10, shortlist=n))
    t_hf_batch = timed(lambda: hf_docs(queries))
    shortlists = reader.search(engine.encode_texts(queries), n)[1]
    distinct = len({int(r) for rows in shortlists for r in rows})
    cold_plain = cold_start(work / "index", ["--no-rerank"])
    cold_rerank = cold_start(work / "index", ["--shortlist", str(n)])

    print(f"device={engine.device} dtype={str(engine.dtype).removeprefix('torch.')} images={args.images} N={n} "
          f"queries={len(queries)} (distinct candidates {distinct} of {n * len(queries)}) threads={torch.get_num_threads()}")
    print(f"no-rerank, 1 query:              {t_norerank * 1000:9.1f} ms/query")
    print(f"rerank N={n}, 1 query:  bt-search {t_rerank:7.2f} s   hf-docs {t_hf_one:7.2f} s   speed-up {t_hf_one / t_rerank:.2f}x")
    print(f"rerank N={n}, batch of {len(queries)}:  bt-search {t_batch / len(queries):7.2f} s/query   "
          f"hf-docs {t_hf_batch / len(queries):7.2f} s/query   speed-up {t_hf_batch / t_batch:.2f}x")
    print(f"cold start (fresh process, load + 1 query): --no-rerank {cold_plain:.1f} s, rerank N={n} {cold_rerank:.1f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
