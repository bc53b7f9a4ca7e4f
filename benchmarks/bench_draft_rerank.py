"""Draft JPEG decoding for rerank candidates: decode time saved, and how far it moves the ITM scores.

Large JPEGs (1600x1200, upscaled sample images) decoded in full or with PIL's draft mode (DCT scaling to
at least twice the crop), then reranked with the demo model against their own captions. The bar to adopt
draft decoding for rerank is max |ΔITM| <= 0.01.

    python benchmarks/bench_draft_rerank.py --images 24
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bt_search.engine.loading import load_engine
from bt_search.media.images import load_pixels
from bt_search.search.evaluate import read_captions

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    args = parser.parse_args()
    engine = load_engine(str(ROOT / "sample_data" / "demo-model"), device="cpu")
    captions = read_captions(ROOT / "sample_data" / "images" / "captions.csv")[: args.images]
    work = Path(tempfile.mkdtemp(prefix="bt-draft-"))
    paths = []
    for caption in captions:
        path = work / f"{i}.jpg"
        Image.open(caption.path).convert("RGB").resize((1600, 1200), Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    pixels, seconds = {}, {}
    for draft in (False, True):
        start = time.perf_counter()
        pixels[draft] = np.stack([load_pixels(p, engine.preprocessing, draft=draft)[0] for p in paths])
        seconds[draft] = (time.perf_counter() - start) / len(paths)
    deltas = []
    for caption in captions:
        text = engine.text_states(caption.text)
        full, fast = (engine.itm_scores(text, engine.vision_states(pixels[d])) for d in (False, True))
        deltas.append(np.abs(full - fast).max())
    print(
        f"{len(paths)} JPEGs 1600x1200: decode {seconds[False] * 1000:.1f} ms full, {seconds[True] * 1000:.1f} ms draft"
    )
    print(f"max |ITM draft - full| over {len(paths)}x{len(paths)} pairs = {max(deltas):.4f} (bar 0.01)")


if __name__ == "__main__":
    main()
