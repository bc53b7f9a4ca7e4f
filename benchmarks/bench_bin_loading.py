"""Model load time by weight format: safetensors vs PyTorch .bin (weights-only unpickling) vs .bin converted once.

Same base-shaped random checkpoint in each form; each figure is the best of --repeat `load_engine` calls in
this one run (config, tokenizer and weights; CPU, fp32).
- safetensors: the checkpoint as saved (memory-mapped by transformers).
- .bin: the same tensors in pytorch_model.bin, read by `torch.load(weights_only=True, mmap=True)`.
- .bin, first load with BT_SEARCH_WEIGHTS_CACHE: reads the pickle and writes the safetensors copy.
- .bin, later loads with the cache: memory-maps the converted copy.

    python benchmarks/bench_bin_loading.py --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load(path: Path, cache: str | None) -> None:
    from bt_search.engine.loading import load_engine
    from bt_search.engine.weights import ENV_WEIGHTS_CACHE

    os.environ.pop(ENV_WEIGHTS_CACHE, None)
    if cache:
        os.environ[ENV_WEIGHTS_CACHE] = cache
    load_engine(str(path), device="cpu", precision="fp32")
    gc.collect()


def main() -> None:
    import torch
    from common import base_shaped_checkpoint, timed
    from safetensors.torch import load_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    source = base_shaped_checkpoint()
    with tempfile.TemporaryDirectory() as work:
        bin_dir = Path(work) / "bin"
        shutil.copytree(source, bin_dir)
        (bin_dir / "model.safetensors").unlink()
        state = load_file(str(source / "model.safetensors"))
        torch.save(state, bin_dir / "pytorch_model.bin")
        size_mb = (bin_dir / "pytorch_model.bin").stat().st_size / 1e6
        del state
        cache = str(Path(work) / "cache")
        results = {".bin, first load with cache (converts)": timed(lambda: load(bin_dir, cache), 1)}
        variants = {
            "safetensors": (source, None),
            ".bin": (bin_dir, None),
            ".bin, later loads with cache": (bin_dir, cache),
        }
        for _ in range(args.repeat):  # interleaved rounds: page cache and allocator state hit every variant alike
            for name, (path, cache_dir) in variants.items():
                seconds = timed(lambda: load(path, cache_dir), 1)
                results[name] = min(results.get(name, seconds), seconds)
    print(f"base-shaped checkpoint, {size_mb:.0f} MB of fp32 weights, best of {args.repeat}, {os.cpu_count()} cores")
    base = results["safetensors"]
    for name in ("safetensors", ".bin", ".bin, first load with cache (converts)", ".bin, later loads with cache"):
        seconds = results[name]
        print(f"{name:<42} {seconds:7.2f} s   {seconds / base:5.2f}x safetensors")


if __name__ == "__main__":
    main()
