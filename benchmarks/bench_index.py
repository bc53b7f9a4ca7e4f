"""End-to-end indexing throughput: bt-search's indexer against the HF-docs batched loop, in one run.

Both read the same 1600x1200 JPEGs from disk and produce one ITC embedding per image with the same
base-shaped random checkpoint; model loading is excluded from both.
- HF-docs loop: PIL open + convert RGB, `BridgeTowerProcessor`, `BridgeTowerForContrastiveLearning`, batched.
- bt-search: `index_paths` (scan, JPEG draft decode -- inline on CPU, in worker processes overlapping the
  image tower on GPU, as `bt-search index` picks by default -- atomic commits to Parquet, FAISS build).

    python benchmarks/bench_index.py --images 32 --batch-size 8

Heavy imports live inside the functions: decode workers are spawned, and a spawned child re-imports the
parent's __main__ script, so a top-level `import torch` here would cost every worker seconds of start-up
that `bt-search index` (whose __main__ is light) does not pay.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_photos(folder: Path, count: int) -> list[Path]:
    """Camera-sized JPEGs with smooth structure (gradients + blobs), so they compress like photos."""
    import numpy as np
    from PIL import Image, ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((1600, 1200), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(3))
        path = folder / f"photo_{i:04d}.jpg"
        img.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: bt-search's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--shape", choices=["base", "large"], default="base", help="random checkpoint shapes")
    parser.add_argument("--skip-hf", action="store_true", help="time bt-search alone (the HF loop is slow at scale)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from common import shaped_checkpoint, timed
    from PIL import Image
    from transformers import BridgeTowerForContrastiveLearning, BridgeTowerProcessor

    from bt_search import config
    from bt_search.engine.loading import load_engine
    from bt_search.indexing.run import index_paths
    from bt_search.media.images import preprocess
    from bt_search.store import IndexWriter

    checkpoint = shaped_checkpoint(args.shape)
    work = Path(tempfile.mkdtemp(prefix="bt-bench-"))
    photos = write_photos(work / "photos", args.images)
    engine = load_engine(str(checkpoint), device=args.device, precision=args.precision)
    workers = config.default_workers(engine.device.type) if args.workers is None else args.workers
    processor = BridgeTowerProcessor.from_pretrained(str(checkpoint))
    reference = (
        BridgeTowerForContrastiveLearning.from_pretrained(str(checkpoint), dtype=engine.dtype).to(engine.device).eval()
    )

    @torch.inference_mode()
    def hf_docs():
        for start in range(0, len(photos), args.batch_size):
            images = [Image.open(p).convert("RGB") for p in photos[start : start + args.batch_size]]
            inputs = processor(images=images, text=["a photo"] * len(images), padding=True, return_tensors="pt")
            reference(**inputs.to(engine.device)).image_embeds.float().cpu()

    def ours():
        index_dir = work / "index"
        shutil.rmtree(index_dir, ignore_errors=True)
        with IndexWriter.open(index_dir, IndexIdentity.of(engine)) as writer:
            report = index_paths([str(work / "photos")], writer, engine, batch_size=args.batch_size, workers=workers)
        assert report.indexed == len(photos), report

    # warm both models on one batch first (allocator, oneDNN kernels), so neither pays the process's first pass
    warm = Image.new("RGB", (640, 480))
    with torch.inference_mode():
        reference(
            **processor(
                images=[warm] * args.batch_size, text=["a photo"] * args.batch_size, padding=True, return_tensors="pt"
            ).to(engine.device)
        )
    engine.encode_images(np.stack([preprocess(warm, engine.preprocessing)] * args.batch_size))
    t_hf = None if args.skip_hf else timed(hf_docs)
    t_ours = timed(ours)
    n = len(photos)
    print(
        f"device={engine.device} dtype={str(engine.dtype).removeprefix('torch.')} shape={args.shape} images={n} "
        f"(1600x1200 JPEG) batch={args.batch_size} workers={workers} torch_threads={torch.get_num_threads()}"
    )
    if t_hf is not None:
        print(f"hf-docs batched loop:        {n / t_hf:8.2f} images/s  ({t_hf:.1f} s)")
    print(f"bt-search index end to end:  {n / t_ours:8.2f} images/s  ({t_ours:.1f} s)")
    if t_hf is not None:
        print(f"speed-up: {t_hf / t_ours:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
