"""The pointing game for explanations (Zhang et al. 2016) on demo scenes, whose generator knows where each shape lies.

A map "points" at the centre of its peak cell (mapped onto the image through the explanation's window); it hits
when that point lies inside the box of an object the text names. Targets: for the whole caption, the objects it
mentions; for a colour word ("red"), every object of that colour in the scene; for a shape word ("circle",
"circles"), every object of that shape. Two chance levels: a uniformly random pixel (hits with the targets' share
of the image's area) and a uniformly random cell of the map's grid (what a map of that resolution pointing at
random scores).

Used by benchmarks/bench_explain.py (the numbers in docs/performance.md) and tests/unit/dev/test_pointing.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bt_search_dev.demo_data import COLOURS, PLURALS, SHAPES, Obj, Scene

SHAPE_WORDS = {**{shape: shape for shape in SHAPES}, **{plural: shape for shape, plural in PLURALS.items()}}


def box(obj: Obj) -> tuple[float, float, float, float]:
    """The object's bounding box in pixels (x0, y0, x1, y1)."""
    return (obj.cx - obj.r, obj.cy - obj.r, obj.cx + obj.r, obj.cy + obj.r)


def targets(scene: Scene, word: str | None) -> list[tuple[float, float, float, float]]:
    """The boxes a text points at: the caption's mentioned objects (`word` None), or those a colour or shape word
    names (empty for any other word)."""
    if word is None:
        return [box(o) for o in scene.objects[: scene.mentioned]]
    if word in COLOURS:
        return [box(o) for o in scene.objects if o.colour == word]
    if word in SHAPE_WORDS:
        return [box(o) for o in scene.objects if o.shape == SHAPE_WORDS[word]]
    return []


def peak_point(values: Sequence[float], grid: tuple[int, int], window, size: tuple[int, int]) -> tuple[float, float]:
    """The centre of the map's peak cell (the first of equal peaks), in image pixels."""
    rows, cols = grid
    cell = int(np.argmax(np.asarray(values)))
    row, col = divmod(cell, cols)
    x0, y0, x1, y1 = window
    width, height = size
    return ((x0 + (x1 - x0) * (col + 0.5) / cols) * width, (y0 + (y1 - y0) * (row + 0.5) / rows) * height)


def inside(point: tuple[float, float], boxes) -> bool:
    x, y = point
    return any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in boxes)


def area_fraction(boxes, size: tuple[int, int]) -> float:
    """Share of the image's pixel centres inside any box: a uniformly random pixel's chance of a hit."""
    width, height = size
    xs, ys = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    covered = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        covered |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    return float(covered.mean())


def cell_fraction(boxes, grid: tuple[int, int], window, size: tuple[int, int]) -> float:
    """Share of the grid's cells whose centre lies in a box: a uniformly random cell's chance of a hit."""
    rows, cols = grid
    hits = 0
    for cell in range(rows * cols):
        one_hot = [0.0] * (rows * cols)
        one_hot[cell] = 1.0
        hits += inside(peak_point(one_hot, grid, window, size), boxes)
    return hits / (rows * cols)


@dataclass
class Tally:
    """Pointing-game counts for one kind of text (whole query, colour word, shape word)."""

    trials: int = 0
    hits: int = 0
    random_pixel: float = 0.0  # summed chance levels
    random_cell: float = 0.0
    per_word: dict[str, list[int]] = field(default_factory=dict)

    def add(self, hit: bool, pixel_chance: float, cell_chance: float, word: str | None = None) -> None:
        self.trials += 1
        self.hits += int(hit)
        self.random_pixel += pixel_chance
        self.random_cell += cell_chance
        if word is not None:
            counts = self.per_word.setdefault(word, [0, 0])
            counts[0] += int(hit)
            counts[1] += 1

    def summary(self) -> dict[str, float | int]:
        n = max(self.trials, 1)
        return {
            "trials": self.trials,
            "accuracy": self.hits / n,
            "random_pixel": self.random_pixel / n,
            "random_cell": self.random_cell / n,
        }


def score_explanation(scene: Scene, explanation, tallies: dict[str, Tally]) -> None:
    """Add one explained (scene, caption) pair to `tallies` ("query", "colour", "shape")."""
    size = (scene.size, scene.size)
    pairs = [("query", None, explanation.query)]
    pairs += [("colour" if w in COLOURS else "shape", w, m) for w, m in explanation.words if targets(scene, w)]
    for kind, word, values in pairs:
        boxes = targets(scene, word)
        hit = inside(peak_point(values, explanation.grid, explanation.window, size), boxes)
        chance_cell = cell_fraction(boxes, explanation.grid, explanation.window, size)
        tallies.setdefault(kind, Tally()).add(hit, area_fraction(boxes, size), chance_cell, word)


def pointing_game(engine, scenes: Sequence[Scene], images, method: str, batch: int = 16) -> dict[str, Tally]:
    """Explain each scene's own caption on its image (the true pair) by `method` and play the pointing game."""
    from bt_search.media.images import preprocess
    from bt_search.search.explain import crop_window, explain_pairs

    tallies: dict[str, Tally] = {}
    for start in range(0, len(scenes), batch):
        chunk = list(zip(scenes[start : start + batch], images[start : start + batch]))
        states = engine.vision_states(np.stack([preprocess(img, engine.preprocessing) for _, img in chunk]))
        for n, (scene, img) in enumerate(chunk):
            window = crop_window(img.width, img.height, engine.preprocessing)
            text = engine.text_states(scene.caption)
            (explanation,) = explain_pairs(engine, text, states[n : n + 1], [window], method)
            score_explanation(scene, explanation, tallies)
    return tallies
