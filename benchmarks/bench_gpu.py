"""GPU throughput of the towers, rerank and index pipeline, and CUDA agreement with the HF reference.

Builds a random checkpoint of the real default model's shapes (`--shape large`: ViT-L/14 at 294 px, RoBERTa-large,
6 cross-modal layers of 1024) or BridgeTower-base shapes, then on `--device`:

1. agreement: our fast paths against `BridgeTowerForContrastiveLearning` / `...ForImageAndTextRetrieval` at fp32
   (max |diff| of image/text embeddings and ITM probabilities) and at the bench precision;
2. image tower alone vs the HF-docs forward (processor output fed to ForContrastiveLearning), images/s per batch;
3. text tower alone, queries/s;
4. rerank of one query over N candidates (vision states + fusion) vs the HF-docs retrieval loop;
5. model FLOPs utilisation of the image tower against `--peak-tflops`.

    python benchmarks/bench_gpu.py --shape large --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def vision_flops_per_image(config) -> float:
    """Dense matmul FLOPs of the vision tower for one image (2 per multiply-add)."""
    vision = config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    width, layers = vision.hidden_size, vision.num_hidden_layers
    per_layer = 2 * tokens * 12 * width * width + 4 * tokens * tokens * width
    patchify = 2 * (tokens - 1) * 3 * vision.patch_size**2 * width
    return layers * per_layer + patchify


def synced(fn, device):
    import torch

    def run():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def agreement(checkpoint: Path, device: str, precision: str, images, texts) -> None:
    import numpy as np
    import torch
    from transformers import (
        BridgeTowerForContrastiveLearning,
        BridgeTowerForImageAndTextRetrieval,
        BridgeTowerProcessor,
    )

    from bt_search.engine.loading import load_engine
    from bt_search.media.images import preprocess

    processor = BridgeTowerProcessor.from_pretrained(str(checkpoint))
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt").to(device)
    with torch.inference_mode():
        contrastive = BridgeTowerForContrastiveLearning.from_pretrained(str(checkpoint)).to(device).eval()
        out = contrastive(**inputs)
        ref_img, ref_txt = out.image_embeds.float().cpu().numpy(), out.text_embeds.float().cpu().numpy()
        del contrastive
        retrieval = BridgeTowerForImageAndTextRetrieval.from_pretrained(str(checkpoint)).to(device).eval()
        one_text = processor(images=images, text=[texts[0]] * len(images), padding=True, return_tensors="pt").to(device)
        ref_itm = torch.softmax(retrieval(**one_text).logits.float(), -1)[:, 1].cpu().numpy()
        del retrieval
    for bench_precision in ("fp32", precision) if precision != "fp32" else ("fp32",):
        engine = load_engine(str(checkpoint), device=device, precision=bench_precision)
        pixels = np.stack([preprocess(img, engine.preprocessing) for img in images])
        img = engine.encode_images(pixels)
        txt = engine.encode_texts(texts)
        itm = engine.itm_scores(engine.text_states(texts[0]), engine.vision_states(pixels))
        cos = float(np.min(np.sum(img * ref_img, axis=1)))
        print(
            f"agreement {bench_precision} on {device}: image max|diff| {np.abs(img - ref_img).max():.2e} "
            f"(min cosine {cos:.5f}), text max|diff| {np.abs(txt - ref_txt).max():.2e}, "
            f"ITM max|diff| {np.abs(itm - ref_itm).max():.2e}"
        )
        del engine
        torch.cuda.empty_cache() if device == "cuda" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["base", "large"], default="large")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch-sizes", default="32,64,128,256")
    parser.add_argument("--shortlist", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the device (H100 SXM: 989)"
    )
    args = parser.parse_args()

    import numpy as np
    import torch
    from common import shaped_checkpoint
    from PIL import Image
    from transformers import (
        BridgeTowerForContrastiveLearning,
        BridgeTowerForImageAndTextRetrieval,
        BridgeTowerProcessor,
    )
    from transformers.utils import logging as hf_logging

    from bt_search.engine.loading import load_engine
    from bt_search.media.images import preprocess

    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    checkpoint = shaped_checkpoint(args.shape)
    print(f"checkpoint {checkpoint} ready in {time.perf_counter() - started:.1f}s")
    rng = np.random.default_rng(0)
    pool = [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(16)]
    texts = ["two cats sleeping on a red couch", "a bowl of fruit", "people on a beach at sunset", "a red car"]
    agreement(checkpoint, args.device, args.precision, pool[:4], texts)

    engine = load_engine(str(checkpoint), device=args.device, precision=args.precision)
    device, dtype = engine.device, engine.dtype
    if device.type == "cuda":
        print(f"device {torch.cuda.get_device_name()} dtype {dtype} torch {torch.__version__}")
    flops = vision_flops_per_image(engine.config)
    print(f"vision tower: {flops / 1e9:.1f} GFLOP per image")
    pixels_one = np.stack([preprocess(img, engine.preprocessing) for img in pool])
    processor = BridgeTowerProcessor.from_pretrained(str(checkpoint))
    reference = BridgeTowerForContrastiveLearning.from_pretrained(str(checkpoint), dtype=dtype).to(device).eval()

    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        pixels = np.concatenate([pixels_one] * (batch // len(pixels_one) + 1))[:batch]
        ours = synced(lambda: engine.encode_images(pixels), device)
        inputs = processor(
            images=(pool * (batch // len(pool) + 1))[:batch],
            text=["a photo"] * batch,
            padding=True,
            return_tensors="pt",
        ).to(device)

        @torch.inference_mode()
        def hf_forward():
            return reference(**inputs).image_embeds.float().cpu()

        hf = synced(hf_forward, device)
        ours(), hf()  # warm-up
        t_ours, t_hf = best_time(ours, args.repeat), best_time(hf, args.repeat)
        mfu = batch / t_ours * flops / (args.peak_tflops * 1e12)
        print(
            f"image tower batch {batch:4d}: bt-search {batch / t_ours:8.1f} img/s (MFU {mfu:5.1%}), "
            f"HF forward {batch / t_hf:8.1f} img/s, speed-up {t_hf / t_ours:.2f}x"
        )
    del reference
    if device.type == "cuda":
        torch.cuda.empty_cache()

    queries = [f"query number {i} about a photo of things" for i in range(256)]
    encode_texts = synced(lambda: engine.encode_texts(queries), device)
    encode_texts()
    print(f"text tower: {len(queries) / best_time(encode_texts, args.repeat):8.1f} queries/s (batch {len(queries)})")
    one_query = synced(lambda: engine.encode_texts(queries[:1]), device)
    one_query()
    print(f"text tower, one query: {best_time(one_query, args.repeat) * 1000:.1f} ms")

    n = args.shortlist
    candidates = np.concatenate([pixels_one] * (n // len(pixels_one) + 1))[:n]
    rerank = synced(lambda: engine.itm_scores(engine.text_states(texts[0]), engine.vision_states(candidates)), device)
    retrieval = BridgeTowerForImageAndTextRetrieval.from_pretrained(str(checkpoint), dtype=dtype).to(device).eval()
    pair_inputs = processor(
        images=(pool * (n // len(pool) + 1))[:n], text=[texts[0]] * n, padding=True, return_tensors="pt"
    ).to(device)

    @torch.inference_mode()
    def hf_rerank():
        return torch.softmax(retrieval(**pair_inputs).logits.float(), -1)[:, 1].cpu()

    hf_pairs = synced(hf_rerank, device)
    rerank(), hf_pairs()
    t_ours, t_hf = best_time(rerank, args.repeat), best_time(hf_pairs, args.repeat)
    print(
        f"rerank 1 query x {n}: bt-search {t_ours * 1000:.1f} ms, HF retrieval forward {t_hf * 1000:.1f} ms, "
        f"speed-up {t_hf / t_ours:.2f}x"
    )
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
