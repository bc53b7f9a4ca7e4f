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
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import torch
    from common import base_shaped_checkpoint, timed
    from safetensors.torch import load_file

    from bt_search.loading import load_engine
    from bt_search.weights import ENV_WEIGHTS_CACHE

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
        load = lambda path: load_engine(str(path), device="cpu", precision="fp32")  # noqa: E731
        results = {"safetensors": timed(lambda: load(source), args.repeat), ".bin": timed(lambda: load(bin_dir), args.repeat)}
        os.environ[ENV_WEIGHTS_CACHE] = str(Path(work) / "cache")
        results[".bin, first load with cache (converts)"] = timed(lambda: load(bin_dir), 1)
        results[".bin, later loads with cache"] = timed(lambda: load(bin_dir), args.repeat)
    print(f"base-shaped checkpoint, {size_mb:.0f} MB of fp32 weights, best of {args.repeat}, {os.cpu_count()} cores")
    base = results["safetensors"]
    for name, seconds in results.items():
        print(f"{name:<42} {seconds:7.2f} s   {seconds / base:5.2f}x safetensors")


if __name__ == "__main__":
    main()
