"""Rerank cost per candidate on this machine, fp32 against `auto`, int8 and bf16, and how far each moves ITM.

Vision states of K candidates, then one query's fusion over them (the rerank's two costs), on a random
checkpoint of BridgeTower-base or the default model's (large) shapes. The precisions share one fp32 engine
where they can (fp32, `auto` and int8 rerank over the same fp32 weights; `bf16` loads bf16 weights) and run
interleaved, `--repeat` rounds in rotating order, so load drift hits all alike; prints the median seconds per
candidate of each, the speed-up over fp32 measured in the same run, and max |ITM − ITM(fp32)| on the same
images (the bar for a reduced-precision rerank is 0.02). For int8 it also prints what the int8 copies of the
weights cost: their size, the process's resident-memory growth while they are built, and the build time;
`--copies` also times building them alone (both halves of the rerank's lists), on one thread against the pool
the rerank uses, alternating for `--repeat` rounds.
`--plain` also times fusion with every attention block in the plain association (keys and values projected,
as HF does), to show what moving the projections to the short side (model._attention_block) gains.

    python benchmarks/bench_rerank_precision.py --shape base --candidates 8 --repeat 3 --plain
    python benchmarks/bench_rerank_precision.py --shape large --candidates 2 --repeat 3 --precisions fp32 auto int8
    python benchmarks/bench_rerank_precision.py --shape large --candidates 2 --repeat 3 --precisions fp32 int8 --copies

To emulate a CPU without AVX512/AMX (e.g. an AVX2-only laptop or AMD before Zen 4) on a newer x86 CPU, cap every
kernel library at AVX2 for the run (MKL's fp32 GEMM, oneDNN, fbgemm's int8 GEMM, ATen's own kernels):

    MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \
        python benchmarks/bench_rerank_precision.py --shape large --candidates 2 --repeat 3 --precisions fp32 int8
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BridgeTowerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import shaped_checkpoint  # noqa: E402

from bt_search.engine import model  # noqa: E402
from bt_search.engine.loading import load_engine, resolve_dtypes  # noqa: E402
from bt_search.engine.quantized import rerank_products  # noqa: E402

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


PRECISIONS = ["fp32", "auto", "int8", "bf16"]
EMULATION = ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def engines_for(checkpoint: Path, precisions: list[str]) -> dict:
    """One fp32 engine for fp32, `auto` and int8 (the rerank dtype is the engine's only difference, as
    load_engine builds them), a bf16 one for `bf16`."""
    fp32 = load_engine(str(checkpoint), device="cpu", precision="fp32")
    engines = {}
    for precision in precisions:
        if precision == "bf16":
            engines[precision] = load_engine(str(checkpoint), device="cpu", precision="bf16")
            continue
        engines[precision] = variant = copy.copy(fp32)
        variant.rerank_dtype = resolve_dtypes(precision, torch.device("cpu"))[1]
    return engines


def int8_cost(engine, pixels: torch.Tensor) -> str:
    """What the int8 copies cost: made during the first int8 rerank (after an fp32 one of the same shapes, so
    the activations' memory is already the allocator's)."""
    before, start = resident_bytes(), time.perf_counter()
    rerank_once(engine, pixels)
    first, grown = time.perf_counter() - start, resident_bytes() - before
    products = rerank_products(engine)
    fp32_bytes = products.fp32_nbytes
    return (
        f"int8 copies of {len(products)} weight matrices ({products.engine} kernels): "
        f"{products.nbytes / 2**20:.0f} MiB of int8 values, scales and biases for {fp32_bytes / 2**20:.0f} MiB of "
        f"fp32 weights ({products.nbytes / fp32_bytes:.2f}x); resident memory grew {grown / 2**20:.0f} MiB over the "
        f"first int8 rerank ({grown / fp32_bytes:.2f}x), which took {first:.1f} s with the copies"
    )


def copies_build(engine, repeat: int) -> str:
    """Seconds to build the int8 copies alone (both halves' lists, as the first rerank prepares them), one thread
    against the pool, alternating; each set on a fresh Int8Products, dropped before the next."""
    text_tokens = engine.text_states(QUERY).streams.shape[1]
    vision = engine.config.vision_config
    image_tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    pool = torch.get_num_threads()
    seconds = {1: [], pool: []}
    for _ in range(repeat):
        for workers in seconds:
            fresh = copy.copy(engine)
            vars(fresh).pop("_int8_products", None)
            start = time.perf_counter()
            products = rerank_products(fresh)
            products.prepare("vision", lambda: model._vision_products(fresh), workers)
            products.prepare("itm", lambda: model._itm_products(fresh, text_tokens, image_tokens), workers)
            seconds[workers].append(time.perf_counter() - start)
            count = len(products)
            del products, fresh
    serial, pooled = statistics.median(seconds[1]), statistics.median(seconds[pool])
    return (
        f"building the {count} int8 copies alone (median of {repeat}): one thread {serial:.2f} s, "
        f"a pool of {pool} {pooled:.2f} s ({serial / pooled:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["base", "large"], default="base")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "auto", "int8", "bf16"], choices=PRECISIONS)
    parser.add_argument("--plain", action="store_true", help="also time fusion in the plain association")
    parser.add_argument("--copies", action="store_true", help="also time building the int8 copies alone")
    args = parser.parse_args()
    load_before = os.getloadavg()
    checkpoint = shaped_checkpoint(args.shape)
    torch.manual_seed(0)
    size = BridgeTowerConfig.from_pretrained(checkpoint).vision_config.image_size
    # one set of candidates for every precision (drawn per precision, the deviation compared different images)
    pixels = torch.randint(0, 256, (args.candidates, size, size, 3), dtype=torch.uint8)
    precisions = ["fp32"] + [p for p in args.precisions if p != "fp32"]
    engines = engines_for(checkpoint, precisions)
    notes = []
    for engine in engines.values():  # warm-up: first calls pay one-off set-up (int8: its copies, reported)
        if engine.rerank_dtype == torch.int8 and not notes:
            notes.append(int8_cost(engine, pixels[:1]))
        else:
            rerank_once(engine, pixels[:1])
    times = {p: ([], []) for p in precisions}
    scores = {}
    for round_ in range(args.repeat):
        for precision in precisions[round_ % len(precisions) :] + precisions[: round_ % len(precisions)]:
            scores[precision], vision, fusion = rerank_once(engines[precision], pixels)
            times[precision][0].append(vision)
            times[precision][1].append(fusion)
    k = args.candidates
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    emulated = {name: os.environ[name] for name in EMULATION if name in os.environ}
    print(
        f"{args.shape} shapes, {k} candidates, {torch.get_num_threads()} threads, "
        f"avx512_bf16={'avx512_bf16' in cpuinfo}, amx={'amx_bf16' in cpuinfo}, "
        f"kernels capped: {emulated or 'no'}; load average before/after {_load(load_before)} / {_load(os.getloadavg())}"
    )
    median = {p: (statistics.median(v), statistics.median(f)) for p, (v, f) in times.items()}
    v32, f32 = median["fp32"]
    for precision, (vision, fusion) in median.items():
        engine = engines[precision]
        dtypes = f"{engine.dtype}/{engine.rerank_dtype}".replace("torch.", "")
        print(
            f"{precision} (embeddings/rerank {dtypes}): vision {vision / k:.3f} s + fusion {fusion / k:.3f} s per "
            f"candidate (median of {args.repeat}), speed-up {(v32 + f32) / (vision + fusion):.2f}x "
            f"(vision {v32 / vision:.2f}x, fusion {f32 / fusion:.2f}x), "
            f"max |ITM - fp32| = {np.abs(scores[precision] - scores['fp32']).max():.4f}"
        )
    for note in notes:
        print(note)
    if args.copies:
        print(copies_build(engines["fp32"], args.repeat))
    if args.plain:
        for precision in precisions:
            timing = fusion_both(engines[precision], engines[precision].vision_states(pixels), args.repeat)
            (folded_scores, folded), (plain_scores, plain) = timing["folded"], timing["plain"]
            print(
                f"{precision} fusion per candidate (best of {args.repeat}): plain association {plain / k:.3f} s, "
                f"folded {folded / k:.3f} s, {plain / folded:.2f}x; max |ITM folded - plain| = "
                f"{np.abs(folded_scores - plain_scores).max():.1e}"
            )


def _load(averages) -> str:
    return " ".join(f"{x:.2f}" for x in averages)


if __name__ == "__main__":
    main()
