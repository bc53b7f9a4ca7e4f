"""How near is a near-duplicate? The cosine of stored ITC image embeddings between an image and its copies
(re-encoded as JPEG, resized, slightly cropped) against the cosine between distinct images with the same
caption (demo_data scenes drawn again from the same caption), with the shipped demo model and a random tiny
checkpoint. `query` folds hits at search/fold.FOLD_COSINE; this picks it and shows the margin.

    python benchmarks/bench_fold_threshold.py [--scenes 60] [--size 256]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bt_search.engine.loading import load_engine
from bt_search.media.images import preprocess
from bt_search_dev import demo_data

THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995)
COPIES = {
    "jpeg q=90": lambda im: _jpeg(im, 90),
    "jpeg q=60": lambda im: _jpeg(im, 60),
    "jpeg q=30": lambda im: _jpeg(im, 30),
    "resized 50%": lambda im: im.resize((im.width // 2, im.height // 2), Image.LANCZOS),
    "resized 150%": lambda im: im.resize((im.width * 3 // 2, im.height * 3 // 2), Image.BICUBIC),
    "cropped 1.5%/side": lambda im: _crop(im, 0.015),
    "cropped 3%/side": lambda im: _crop(im, 0.03),
    "cropped 6%/side": lambda im: _crop(im, 0.06),
    "resized 50% + jpeg q=75": lambda im: _jpeg(im.resize((im.width // 2, im.height // 2), Image.LANCZOS), 75),
}


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _crop(im: Image.Image, share: float) -> Image.Image:
    dx, dy = round(im.width * share), round(im.height * share)
    return im.crop((dx, dy, im.width - dx, im.height - dy))


def scene_pairs(n: int, size: int, seed: int = 7) -> list[tuple[Image.Image, Image.Image]]:
    """`n` pairs of distinct renders of one caption (two random draws of the same pair spec)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        first = demo_data.random_scene(rng, size)
        if first.kind == "pair":
            a, b = first.objects[0], first.objects[1]
            again = demo_data.pair_scene(rng, (a.colour, a.shape), (b.colour, b.shape), _relation(first), size)
        else:
            o = first.objects[0]
            again = demo_data.count_scene(rng, o.colour, o.shape, first.mentioned, size)
        assert again.caption == first.caption, (again.caption, first.caption)
        pairs.append((demo_data.render(first), demo_data.render(again)))
    return pairs


def _relation(scene) -> str:
    for relation in demo_data.RELATIONS:
        if f" {relation} " in scene.caption:
            return relation
    raise ValueError(scene.caption)


def embed(engine, images: list[Image.Image]) -> np.ndarray:
    return engine.encode_images(np.stack([preprocess(im, engine.preprocessing) for im in images]))


def measure(engine, pairs) -> dict[str, np.ndarray]:
    originals = embed(engine, [a for a, _ in pairs])
    out = {}
    for name, make in COPIES.items():
        out[name] = np.sum(originals * embed(engine, [make(a) for a, _ in pairs]), axis=1)
    out["distinct, same caption"] = np.sum(originals * embed(engine, [b for _, b in pairs]), axis=1)
    return out


def random_checkpoint(root: Path) -> Path:
    from bt_search_dev.checkpoints import train_bpe_tokenizer
    from tests.support.checkpoints import CAPTIONS, SPECS, build_checkpoint

    tokenizer = root / "tokenizer"
    train_bpe_tokenizer(CAPTIONS * 5, tokenizer, vocab_size=400)
    return build_checkpoint(SPECS[0], root, tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=60)
    parser.add_argument("--size", type=int, default=256, help="rendered scene side in pixels")
    args = parser.parse_args()
    pairs = scene_pairs(args.scenes, args.size)
    with tempfile.TemporaryDirectory() as work:
        models = {"demo model": str(ROOT / "sample_data/demo-model"), "random tiny": str(random_checkpoint(Path(work)))}
        for label, model in models.items():
            engine = load_engine(model, device="cpu", precision="fp32")
            print(f"\n{label} ({args.scenes} scenes, {args.size} px): cosine to the original")
            print(f"{'':26} {'min':>7} {'p5':>7} {'median':>7} {'p95':>7} {'max':>7}  share folded at T =", end="")
            print("".join(f" {t:>6}" for t in THRESHOLDS))
            for name, values in measure(engine, pairs).items():
                q = np.percentile(values, [0, 5, 50, 95, 100])
                shares = [np.mean(values >= t) for t in THRESHOLDS]
                print(
                    f"{name:26} "
                    + " ".join(f"{v:7.4f}" for v in q)
                    + "  "
                    + " " * 20
                    + "".join(f" {s:6.2f}" for s in shares)
                )


if __name__ == "__main__":
    main()
