"""Near-duplicates for the folding tests: demo_data scenes, copies of them (re-encoded, resized, slightly
cropped) and distinct renders of the same captions, written as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bt_search_dev import demo_data

SIZE = 256  # rendered side: a photo-like size, which the model's preprocessing shrinks
SEED = 11


def cropped(im: Image.Image, share: float) -> Image.Image:
    dx, dy = round(im.width * share), round(im.height * share)
    return im.crop((dx, dy, im.width - dx, im.height - dy))


COPIES = {  # each written as its own file: the re-encode as a quality-60 JPEG
    "jpeg60": lambda im: im,
    "half": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "crop": lambda im: cropped(im, 0.01),
}


def same_caption_pairs(count: int, seed: int = SEED) -> list[tuple[str, Image.Image, Image.Image]]:
    """`count` (caption, first render, second render) of pair scenes: two draws of one caption."""
    rng = np.random.default_rng(seed)
    out = []
    relations = demo_data.RELATIONS
    colours, shapes = list(demo_data.COLOURS), demo_data.SHAPES
    while len(out) < count:
        a = (colours[int(rng.integers(len(colours)))], shapes[int(rng.integers(len(shapes)))])
        b = (colours[int(rng.integers(len(colours)))], shapes[int(rng.integers(len(shapes)))])
        if a == b:
            continue
        relation = relations[int(rng.integers(len(relations)))]
        first, second = (demo_data.pair_scene(rng, a, b, relation, SIZE) for _ in range(2))
        out.append((first.caption, demo_data.render(first), demo_data.render(second)))
    return out


def write_library(folder: Path, count: int, seed: int = SEED) -> dict[str, list[Path]]:
    """Per scene `sNN`: its original, one copy of each COPIES kind, and a distinct render of its caption, as files
    in `folder`. Returns {"sNN": [original, copies...], "sNN-other": [distinct render]}."""
    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Path]] = {}
    for n, (_, first, second) in enumerate(same_caption_pairs(count, seed)):
        name = f"s{n:02d}"
        files = [folder / f"{name}.png"]
        first.save(files[0])
        for kind, make in COPIES.items():
            files.append(folder / f"{name}-{kind}.{'jpg' if kind == 'jpeg60' else 'png'}")
            make(first).save(files[-1], **({"quality": 60} if kind == "jpeg60" else {}))
        other = folder / f"{name}-other.png"
        second.save(other)
        groups[name], groups[f"{name}-other"] = files, [other]
    return groups
