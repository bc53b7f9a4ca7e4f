"""Explanations (`--explain`): how well they point, and what they cost per hit.

1. Pointing game (bt_search_dev/pointing.py) with the demo model on sample_data: each image explained for its own
   caption, for each method of search/explain.py, against a random pixel and a random grid cell.
2. Cost per hit: the rerank of K hits (itm_scores) and their explanation (explain_pairs), side by side over the
   same states, on the demo model and on a BridgeTower-base-shaped random checkpoint (benchmarks/common.py).

    python benchmarks/bench_explain.py            # both parts
    python benchmarks/bench_explain.py --no-cost  # the pointing game alone
    python benchmarks/bench_explain.py --no-pointing  # the cost alone
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bt_search.engine.loading import load_engine
from bt_search.media.images import preprocess
from bt_search.search.explain import METHODS, explain_pairs
from bt_search_dev import demo_data
from bt_search_dev.pointing import pointing_game

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "sample_data" / "images"


def sample_scenes():
    """The shipped sample set's scenes (regenerated from SAMPLE_SEED) with the shipped image files, in file order."""
    scenes = demo_data.sample_set(demo_data.SAMPLE_SEED)
    with open(IMAGES / "captions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["caption"] for r in rows] == [s.caption for s in scenes], "sample_data does not match its generator"
    return scenes, [Image.open(IMAGES / r["file"]).convert("RGB") for r in rows]


def pointing(engine) -> dict:
    scenes, images = sample_scenes()
    return {
        method: {kind: t.summary() for kind, t in pointing_game(engine, scenes, images, method).items()}
        for method in METHODS
    }


def cost(engine, hits: int, repeats: int) -> dict:
    """Median seconds per hit: the ITM rerank of `hits` images, and their explanation by each method."""
    rng = np.random.default_rng(0)
    crop = engine.preprocessing.crop
    pixels = np.stack(
        [preprocess(Image.fromarray(rng.integers(0, 255, (crop, crop, 3), dtype=np.uint8)), engine.preprocessing)]
        * hits
    )
    states = engine.vision_states(pixels)
    text = engine.text_states("a red circle left of a blue square")
    windows = [(0.0, 0.0, 1.0, 1.0)] * hits
    timings = {"itm": lambda: engine.itm_scores(text, states)}
    for method in METHODS:
        timings[method] = lambda method=method: explain_pairs(engine, text, states, windows, method)
    out = {}
    for name, run in timings.items():
        run()  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        out[name] = float(np.median(seconds)) / hits
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-cost", action="store_true")
    parser.add_argument("--no-pointing", action="store_true")
    parser.add_argument("--hits", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    demo = load_engine(str(ROOT / "sample_data" / "demo-model"), device="cpu", precision="fp32")
    report = {} if args.no_pointing else {"pointing": pointing(demo)}
    if not args.no_cost:
        from benchmarks.common import base_shaped_checkpoint

        report["cost_per_hit_s"] = {"demo": cost(demo, args.hits, args.repeats)}
        base = load_engine(str(base_shaped_checkpoint()), device="cpu", precision="fp32")
        report["cost_per_hit_s"]["base-shaped"] = cost(base, args.hits, args.repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
