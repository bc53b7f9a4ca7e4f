"""Rerank cost per candidate on this machine, fp32 against `auto` (and bf16), and how far each moves ITM.

Vision states of K candidates, then one query's fusion over them (the rerank's two costs), on a random
checkpoint of BridgeTower-base or the default model's (large) shapes. Prints seconds per candidate for each
precision (`auto` on a CPU with AVX512-BF16 or AMX: a bf16 rerank over fp32 weights), the speed-up over
fp32, and max |ITM − ITM(fp32)| (the bar for a bf16 rerank is 0.02). Fusion is also
timed with every attention block in the plain association (keys and values projected, as HF does), to show
what moving the projections to the short side (model._attention_block) gains, and that it changes nothing.

    python benchmarks/bench_rerank_precision.py --shape base --candidates 8 --repeat 3
    python benchmarks/bench_rerank_precision.py --shape large --candidates 4 --repeat 1 --precisions fp32 auto
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BridgeTowerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import shaped_checkpoint  # noqa: E402

from bt_search.engine import model  # noqa: E402
from bt_search.engine.loading import load_engine  # noqa: E402

QUERY = "a photo of two cats sleeping on a couch"


def rerank_once(engine, pixels: torch.Tensor) -> tuple[np.ndarray, float, float]:
    start = time.perf_counter()
    states = engine.vision_states(pixels)
    vision = time.perf_counter() - start
    start = time.perf_counter()
    scores = engine.itm_scores(engine.text_states(QUERY), states)
    return scores, vision, time.perf_counter() - start


@contextlib.contextmanager
def plain_attention():
    """Every attention block as HF associates it: project queries, keys and values, attend, dense."""
    folded = model._attention_block
    model._attention_block = lambda block, rows, keys, mask: block.output(
        model._bert_attention(block.self, rows, keys, mask), rows
    )
    try:
        yield
    finally:
        model._attention_block = folded


def fusion_both(engine, states: torch.Tensor, repeat: int) -> dict[str, tuple[np.ndarray, float]]:
    """Best-of-`repeat` fusion time, folded and plain association alternating (so load drift hits both)."""
    text = engine.text_states(QUERY)
    best = {}
    for _ in range(repeat):
        for name in ("folded", "plain"):
            with plain_attention() if name == "plain" else contextlib.nullcontext():
                start = time.perf_counter()
                scores = engine.itm_scores(text, states)
                elapsed = time.perf_counter() - start
            best[name] = (scores, min(elapsed, best.get(name, (None, float("inf")))[1]))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["base", "large"], default="base")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many for the folded/plain fusion times")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "auto", "bf16"], choices=["fp32", "auto", "bf16"])
    args = parser.parse_args()
    checkpoint = shaped_checkpoint(args.shape)
    torch.manual_seed(0)
    results, fusions = {}, {}
    size = BridgeTowerConfig.from_pretrained(checkpoint).vision_config.image_size
    # one set of candidates for both precisions (drawn per precision, the deviation compared different images)
    pixels = torch.randint(0, 256, (args.candidates, size, size, 3), dtype=torch.uint8)
    dtypes = {}
    for precision in ["fp32"] + [p for p in args.precisions if p != "fp32"]:
        engine = load_engine(str(checkpoint), device="cpu", precision=precision)
        dtypes[precision] = f"{engine.dtype}/{engine.rerank_dtype}".replace("torch.", "")
        rerank_once(engine, pixels[:1])  # warm-up
        results[precision] = rerank_once(engine, pixels)
        fusions[precision] = fusion_both(engine, engine.vision_states(pixels), args.repeat)
        del engine
    k = args.candidates
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    print(
        f"{args.shape} shapes, {k} candidates, {torch.get_num_threads()} threads, "
        f"avx512_bf16={'avx512_bf16' in cpuinfo}, amx={'amx_bf16' in cpuinfo}"
    )
    s32, v32, f32 = results["fp32"]
    for precision, (scores, vision, fusion) in results.items():
        print(
            f"{precision} (embeddings/rerank {dtypes[precision]}): vision {vision / k:.2f} s + fusion "
            f"{fusion / k:.2f} s per candidate, speed-up {(v32 + f32) / (vision + fusion):.2f}x, "
            f"max |ITM - fp32| = {np.abs(scores - s32).max():.4f}"
        )
    for precision, timing in fusions.items():
        (folded_scores, folded), (plain_scores, plain) = timing["folded"], timing["plain"]
        print(
            f"{precision} fusion per candidate (best of {args.repeat}): plain association {plain / k:.3f} s, "
            f"folded {folded / k:.3f} s, {plain / folded:.2f}x; max |ITM folded - plain| = "
            f"{np.abs(folded_scores - plain_scores).max():.1e}"
        )


if __name__ == "__main__":
    main()
