"""Synthetic pictures for tests: structured noise whose embeddings differ from one seed to the next."""

from __future__ import annotations

import numpy as np
from PIL import Image


def noise_image(seed: int, width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A structured random picture (blocks + noise) so embeddings of different images differ."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((width, height), Image.Resampling.NEAREST)
    noisy = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-20, 21, size=(height, width, 3)), 0, 255)
    return Image.fromarray(noisy.astype(np.uint8)).convert(mode)


def write_pngs(folder, names, seed: int = 0, size: tuple[int, int] = (64, 64)):
    """One noise PNG per name in `folder` (created), seeds counting up from `seed`; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        noise_image(seed + i, *size).save(folder / name)
    return [folder / name for name in names]
