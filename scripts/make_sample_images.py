#!/usr/bin/env python
"""Write the held-out sample image set: ``sample_data/images/img_NNN.{png,jpg}`` + ``captions.csv``.

Made by the same generator as the demo model's training data (``bt_search_dev/demo_data.py``) with another seed.
Every caption is true of exactly one image, and the set is built from "confusable groups": four images
with the same colours, shapes and axis that differ only in binding and order ("a red circle left of a blue
square", "a blue circle left of a red square", "a blue square left of a red circle", ...), plus
"two ..." / "three ..." count scenes. File names say nothing about the content.

    python scripts/make_sample_images.py                       # the shipped set
    python scripts/make_sample_images.py --out /tmp/imgs --seed 7
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from bt_search_dev import demo_data

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "sample_data" / "images"


def write_sample_set(out: Path, seed: int, groups: int, counts: int, jpeg_every: int) -> int:
    """Render the set into `out` (replacing earlier img_* files there). Returns the number of images."""
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("img_*.png")) + list(out.glob("img_*.jpg")):
        old.unlink()
    scenes = demo_data.sample_set(seed, n_groups=groups, n_counts=counts)
    rows = []
    for i, scene in enumerate(scenes):
        img = demo_data.render(scene)
        if jpeg_every and i % jpeg_every == jpeg_every - 1:
            name = f"img_{i:03d}.jpg"
            img.save(out / name, format="JPEG", quality=92)
        else:
            name = f"img_{i:03d}.png"
            img.save(out / name, format="PNG", optimize=True)
        rows.append({"file": name, "caption": scene.caption})
    with open(out / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "caption"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=demo_data.SAMPLE_SEED)
    p.add_argument("--groups", type=int, default=50, help="confusable groups of 4 images")
    p.add_argument("--counts", type=int, default=40, help="'two/three ...' count images")
    p.add_argument("--jpeg-every", type=int, default=8, help="every Nth image is a JPEG (0: all PNG)")
    args = p.parse_args(argv)
    n = write_sample_set(args.out, args.seed, args.groups, args.counts, args.jpeg_every)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"wrote {n} images + captions.csv to {args.out} ({size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
