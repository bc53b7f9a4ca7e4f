"""Images/s of the image-tower-only path against the HF-docs path, side by side in one run.

HF-docs path: `BridgeTowerProcessor` + `BridgeTowerForContrastiveLearning(...).image_embeds`, batched (it runs
the text tower and the cross-modal encoder too). Ours: `preprocess` + `BridgeTowerEngine.encode_images`.
Both start from the same decoded PIL images, so this measures preprocessing + model only.

    python benchmarks/bench_image_tower.py --images 32 --batch-size 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_shaped_checkpoint, timed  # noqa: E402

from bt_search.engine.loading import load_engine  # noqa: E402
from bt_search.media.images import preprocess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from PIL import Image
    from transformers import BridgeTowerForContrastiveLearning, BridgeTowerProcessor

    checkpoint = base_shaped_checkpoint()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(args.images)]
    batches = [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]

    engine = load_engine(str(checkpoint), device=args.device, precision=args.precision)
    dtype, device = engine.dtype, engine.device
    processor = BridgeTowerProcessor.from_pretrained(str(checkpoint))
    reference = BridgeTowerForContrastiveLearning.from_pretrained(str(checkpoint), dtype=dtype).to(device).eval()

    def ours():
        for batch in batches:
            engine.encode_images(np.stack([preprocess(img, engine.preprocessing) for img in batch]))

    @torch.inference_mode()
    def hf_docs():
        for batch in batches:
            inputs = processor(images=batch, text=["a photo"] * len(batch), padding=True, return_tensors="pt")
            reference(**inputs.to(device)).image_embeds.float().cpu()

    ours()  # warm-up (allocator, kernels)
    t_ours = timed(ours, args.repeat)
    t_hf = timed(hf_docs, args.repeat)
    n = len(images)
    print(
        f"device={device} dtype={str(dtype).removeprefix('torch.')} images={n} batch={args.batch_size} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"hf-docs  (processor + ForContrastiveLearning): {n / t_hf:8.2f} images/s")
    print(f"bt-search (image tower only):                  {n / t_ours:8.2f} images/s")
    print(f"speed-up: {t_hf / t_ours:.2f}x")


if __name__ == "__main__":
    main()
