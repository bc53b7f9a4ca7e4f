"""Deterministic synthetic captioned images for the toy demo model and the sample image set.

Scenes are coloured shapes on a lightly noisy grey background, drawn with PIL. Two kinds:

- ``pair``: two different objects in a clear spatial relation -- "a red circle left of a blue square",
  "a yellow star above a purple cross". Relations: ``left of``, ``right of``, ``above``, ``below``.
- ``count``: two or three copies of one object -- "two green triangles", "three blue crosses".

Objects sit in the cells of a 4x4 grid (one 16-pixel patch each at 64 pixels), with a little jitter, and most
scenes hold one or two unmentioned distractor objects, as real captions leave things out.

Captions are built so that a bag-of-features embedding is not enough: :func:`confusable_group` returns the
four images that share one bag of words (two colours, two shapes, one axis) but differ in which colour goes
with which shape and which object comes first. Every scene has a semantic ``key``: two scenes with the same
key are described by the same captions ("A left of B" and "B right of A" share a key); :func:`satisfies`
says whether a caption is true of any scene, so a retrieval set can have exactly one true image per caption.

Everything is a pure function of a seed: ``numpy.random.Generator(PCG64(seed))`` drives geometry, colour
jitter, background and noise, and :func:`render` is a pure function of a :class:`Scene`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SAMPLE_SEED = 1234  # the shipped held-out sample set (scripts/make_sample_images.py)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 175, 60),
    "blue": (45, 85, 230),
    "yellow": (235, 215, 45),
    "purple": (150, 55, 200),
}
RELATIONS = ("left of", "right of", "above", "below")
# the relation words captions are written with, per axis; the first is the "forward" one (first object
# left of / above the second); a second word, if any, says the same layout the other way round
PHRASINGS: dict[str, tuple[str, ...]] = {"h": ("left of", "right of"), "v": ("above", "below")}
COUNT_WORDS = {2: "two", 3: "three"}
COLOUR_JITTER = 12  # per channel, uniform
NOISE_STD = 5.0  # gaussian pixel noise over the whole image
BACKGROUND_RANGE = (55, 115)  # grey level of the background, uniform
GRID = 4  # objects sit in the cells of a GRID x GRID layout (one cell = one 16 px patch at 64 px) ...
JITTER = 1.5  # ... their centres jittered by up to this many pixels (at 64 px)
RADIUS_RANGE = (4.75, 5.75)  # half-size of an object's box, pixels at 64 px
PAIR_DISTRACTORS = (0, 1, 2)  # extra, unmentioned objects in a pair scene (uniform choice)
COUNT_DISTRACTORS = (0, 1)  # ... and in a count scene
ATTEMPTS = 20  # re-draws of a sample-set group before its spec is given up


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str
    cx: float
    cy: float
    r: float  # half the side of the object's bounding box
    rgb: tuple[int, int, int]  # jittered fill colour
    angle: float = 0.0  # rotation in degrees (stars only)


@dataclass(frozen=True)
class Scene:
    kind: str  # "pair" | "count"
    objects: tuple[Obj, ...]
    caption: str
    key: tuple
    background: int
    noise_seed: int
    size: int = IMAGE_SIZE
    mentioned: int = 2  # the caption talks about objects[:mentioned]; the rest are distractors


def _phrase(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


def pair_caption(a: tuple[str, str], b: tuple[str, str], relation: str) -> str:
    """ "a red circle left of a blue square" for a=("red","circle"), b=("blue","square")."""
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}")
    return f"{_phrase(*a)} {relation} {_phrase(*b)}"


def count_caption(colour: str, shape: str, n: int) -> str:
    return f"{COUNT_WORDS[n]} {colour} {PLURALS[shape]}"


def pair_key(a: tuple[str, str], b: tuple[str, str], relation: str) -> tuple:
    """Canonical meaning: ("h", left, right) or ("v", top, bottom)."""
    if relation == "left of":
        return ("h", a, b)
    if relation == "right of":
        return ("h", b, a)
    if relation == "above":
        return ("v", a, b)
    if relation == "below":
        return ("v", b, a)
    raise ValueError(f"unknown relation {relation!r}")


def all_captions() -> list[str]:
    """Every caption the generator can write (for training the tokenizer)."""
    objs = [(c, s) for c in COLOURS for s in SHAPES]
    out = [pair_caption(a, b, rel) for a in objs for b in objs if a != b for rel in RELATIONS]
    out += [count_caption(c, s, n) for c in COLOURS for s in SHAPES for n in COUNT_WORDS]
    return out


# ---------------------------------------------------------------- geometry


def _jitter(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    base = np.array(COLOURS[colour])
    return tuple(int(v) for v in np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255))


def _obj(rng: np.random.Generator, colour: str, shape: str, cx: float, cy: float, r: float) -> Obj:
    angle = float(rng.uniform(-15, 15)) if shape == "star" else 0.0
    return Obj(colour, shape, float(cx), float(cy), float(r), _jitter(rng, colour), angle)


def _scene_base(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1)), int(rng.integers(0, 2**31 - 1))


def _cell_centre(rng: np.random.Generator, col: int, row: int, size: int) -> tuple[float, float]:
    cell = size / GRID
    return (col + 0.5) * cell + rng.uniform(-JITTER, JITTER), (row + 0.5) * cell + rng.uniform(-JITTER, JITTER)


def _radius(rng: np.random.Generator, size: int) -> float:
    return float(rng.uniform(*RADIUS_RANGE)) * size / IMAGE_SIZE


def cell_of(o: Obj, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(column, row) of the grid cell holding an object's centre."""
    cell = size / GRID
    return int(o.cx // cell), int(o.cy // cell)


def _free_cells(rng: np.random.Generator, used: set[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    free = [(c, r) for r in range(GRID) for c in range(GRID) if (c, r) not in used]
    return [free[int(i)] for i in rng.choice(len(free), n, replace=False)]


def _distractors(
    rng: np.random.Generator, n: int, forbidden: set[tuple[str, str]], used: set[tuple[int, int]], size: int
) -> tuple[Obj, ...]:
    """`n` different objects, none in `forbidden`, in free cells."""
    choices = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in forbidden]
    picked = [choices[int(i)] for i in rng.choice(len(choices), n, replace=False)]
    cells = _free_cells(rng, used, n)
    return tuple(
        _obj(rng, c, s, *_cell_centre(rng, col, row, size), r=_radius(rng, size))
        for (c, s), (col, row) in zip(picked, cells)
    )


def _bindings(a: tuple[str, str], b: tuple[str, str]) -> set[tuple[str, str]]:
    """The objects that a bag-of-words reading of "a ... b" would accept: both colour-shape bindings."""
    return {a, b, (a[0], b[1]), (b[0], a[1])}


def pair_scene(
    rng: np.random.Generator,
    a: tuple[str, str],
    b: tuple[str, str],
    relation: str,
    size: int = IMAGE_SIZE,
    distractors: int | None = None,
) -> Scene:
    """Object `a` in `relation` to object `b` ("left of": a in the left half, b in the right, at most a row apart).

    Plus `distractors` unmentioned objects (random count from PAIR_DISTRACTORS when None) in other cells;
    a distractor is never one of the four colour-shape bindings of `a` and `b`, so it cannot make another
    caption about these colours and shapes true.
    """
    if a == b:
        raise ValueError("a pair scene needs two different objects")
    key = pair_key(a, b, relation)
    axis, first, second = key  # first = left/top object
    half = GRID // 2
    while True:
        # along the axis: first in the first half, second in the second half, further apart along the
        # axis than across it (so "left of" is clear however you read it)
        along1, along2 = int(rng.integers(0, half)), int(rng.integers(half, GRID))
        across1 = int(rng.integers(0, GRID))
        across2 = int(np.clip(across1 + rng.integers(-1, 2), 0, GRID - 1))
        if along2 - along1 > abs(across2 - across1):
            break
    cells = [(along1, across1), (along2, across2)] if axis == "h" else [(across1, along1), (across2, along2)]
    o1, o2 = (
        _obj(rng, *obj, *_cell_centre(rng, col, row, size), r=_radius(rng, size))
        for obj, (col, row) in zip((first, second), cells)
    )
    n = int(rng.choice(PAIR_DISTRACTORS)) if distractors is None else distractors
    extra = _distractors(rng, n, _bindings(a, b), set(cells), size)
    objects = ((o1, o2) if first == a else (o2, o1)) + extra  # mentioned objects first, in caption order
    bg, noise_seed = _scene_base(rng)
    return Scene("pair", objects, pair_caption(a, b, relation), key, bg, noise_seed, size, 2)


def count_scene(
    rng: np.random.Generator, colour: str, shape: str, n: int, size: int = IMAGE_SIZE, distractors: int | None = None
) -> Scene:
    """`n` (2 or 3) copies of one object in different grid cells, plus unmentioned other objects."""
    if n not in COUNT_WORDS:
        raise ValueError(f"count must be one of {sorted(COUNT_WORDS)}")
    cells = [(int(c) % GRID, int(c) // GRID) for c in rng.choice(GRID * GRID, n, replace=False)]
    objects = tuple(
        _obj(rng, colour, shape, *_cell_centre(rng, col, row, size), r=_radius(rng, size)) for col, row in cells
    )
    k = int(rng.choice(COUNT_DISTRACTORS)) if distractors is None else distractors
    objects += _distractors(rng, k, {(colour, shape)}, set(cells), size)
    bg, noise_seed = _scene_base(rng)
    key = ("count", colour, shape, n)
    return Scene("count", objects, count_caption(colour, shape, n), key, bg, noise_seed, size, n)


def satisfies(key: tuple, scene: Scene) -> bool:
    """Is the caption with meaning `key` true of `scene` (all its objects, distractors included)?

    Pairs: some object matching the first is in the relation to some object matching the second, where
    "left of" means a smaller grid column by more columns than rows apart (likewise "above").
    Counts: exactly that many objects of that colour and shape.
    """
    if key[0] == "count":
        _, colour, shape, n = key
        return sum(o.colour == colour and o.shape == shape for o in scene.objects) == n
    axis, first, second = key
    for p in scene.objects:
        if (p.colour, p.shape) != first:
            continue
        for q in scene.objects:
            if (q.colour, q.shape) != second:
                continue
            (pc, pr), (qc, qr) = cell_of(p, scene.size), cell_of(q, scene.size)
            along, across = (qc - pc, qr - pr) if axis == "h" else (qr - pr, qc - pc)
            if along > abs(across):
                return True
    return False


def _conflicts(new: list[Scene], existing: list[Scene]) -> bool:
    """Would adding `new` make some caption true of a second image (or repeat a meaning)?"""
    everything = existing + new
    for s in new:
        for t in everything:
            if s is t:
                continue
            if s.key == t.key or satisfies(s.key, t) or satisfies(t.key, s):
                return True
    return False


def _phrased_pair(
    rng: np.random.Generator, first: tuple[str, str], second: tuple[str, str], axis: str, size: int = IMAGE_SIZE
) -> Scene:
    """A pair scene with `first` left of (axis "h") or above ("v") `second`, in a random phrasing."""
    words = PHRASINGS[axis]
    rel = words[int(rng.integers(0, len(words)))]
    if rel == words[0]:
        return pair_scene(rng, first, second, rel, size)
    return pair_scene(rng, second, first, rel, size)


def confusable_group(
    rng: np.random.Generator, colours: tuple[str, str], shapes: tuple[str, str], axis: str, size: int = IMAGE_SIZE
) -> list[Scene]:
    """The four scenes that share one bag of words: both bindings of colours to shapes x both orders.

    Each scene's caption uses a relation word of ``PHRASINGS[axis]`` chosen at random, so with two words
    the same layout is described both ways across a data set.
    """
    (c1, c2), (s1, s2) = colours, shapes
    if c1 == c2 or s1 == s2:
        raise ValueError("a confusable group needs two colours and two shapes")
    scenes = []
    for a, b in (((c1, s1), (c2, s2)), ((c1, s2), (c2, s1))):
        for first, second in ((a, b), (b, a)):
            scenes.append(_phrased_pair(rng, first, second, axis, size))
    return scenes


def _random_pair_spec(rng: np.random.Generator) -> tuple[tuple[str, str], tuple[str, str], str]:
    colours = list(COLOURS)
    i, j = rng.choice(len(colours), 2, replace=False)
    k, m = rng.choice(len(SHAPES), 2, replace=False)
    return (colours[i], colours[j]), (SHAPES[k], SHAPES[m]), ("h", "v")[int(rng.integers(0, 2))]


def random_scene(rng: np.random.Generator, size: int = IMAGE_SIZE) -> Scene:
    """One scene of any kind: 80% pairs (any two different objects, colours or shapes may repeat), 20% counts."""
    colours = list(COLOURS)
    if rng.random() < 0.8:
        while True:
            a = (colours[int(rng.integers(len(colours)))], SHAPES[int(rng.integers(len(SHAPES)))])
            b = (colours[int(rng.integers(len(colours)))], SHAPES[int(rng.integers(len(SHAPES)))])
            if a != b:
                return _phrased_pair(rng, a, b, ("h", "v")[int(rng.integers(0, 2))], size)
    return count_scene(
        rng,
        colours[int(rng.integers(len(colours)))],
        SHAPES[int(rng.integers(len(SHAPES)))],
        int(rng.integers(2, 4)),
        size,
    )


def false_caption(rng: np.random.Generator, scene: Scene) -> str:
    """A caption close to the scene's own but false of it (a hard negative text).

    Pairs: the colours swapped between the shapes, the two objects swapped, or the other axis. Counts: the
    other count, or another colour. Checked with :func:`satisfies`, distractors included.
    """
    for _ in range(100):
        if scene.kind == "count":
            _, colour, shape, n = scene.key
            if rng.random() < 0.5:
                key = ("count", colour, shape, 5 - n)
            else:
                key = ("count", [c for c in COLOURS if c != colour][int(rng.integers(len(COLOURS) - 1))], shape, n)
            if not satisfies(key, scene):
                return count_caption(*key[1:])
            continue
        axis, (c1, s1), (c2, s2) = scene.key
        kind = int(rng.integers(0, 3))
        if kind == 0 and c1 != c2 and s1 != s2:
            first, second = (c2, s1), (c1, s2)  # binding swap
        elif kind == 1:
            first, second = (c2, s2), (c1, s1)  # order swap
        else:
            first, second, axis = (c1, s1), (c2, s2), ("v" if axis == "h" else "h")  # other axis
        if not satisfies((axis, first, second), scene):
            words = PHRASINGS[axis]
            rel = words[int(rng.integers(0, len(words)))]
            return pair_caption(first, second, rel) if rel == words[0] else pair_caption(second, first, rel)
    raise RuntimeError(f"no false caption found for {scene.caption!r}")  # pragma: no cover


# ---------------------------------------------------------------- drawing


def _star(cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        t = math.radians(angle - 90 + 36 * i)
        pts.append((cx + rad * math.cos(t), cy + rad * math.sin(t)))
    return pts


def _draw(draw: ImageDraw.ImageDraw, o: Obj) -> None:
    x0, y0, x1, y1 = o.cx - o.r, o.cy - o.r, o.cx + o.r, o.cy + o.r
    if o.shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=o.rgb)
    elif o.shape == "square":
        s = o.r * 0.85  # a square looks bigger than a circle of the same box
        draw.rectangle([o.cx - s, o.cy - s, o.cx + s, o.cy + s], fill=o.rgb)
    elif o.shape == "triangle":
        draw.polygon([(o.cx, y0), (x1, y1), (x0, y1)], fill=o.rgb)
    elif o.shape == "star":
        draw.polygon(_star(o.cx, o.cy, o.r * 1.05, o.angle), fill=o.rgb)
    elif o.shape == "cross":
        # on whole pixels, so both arms are symmetric about the centre pixel
        cx, cy, arm, half = round(o.cx), round(o.cy), round(o.r), max(1, round(o.r * 0.3))
        draw.rectangle([cx - arm, cy - half, cx + arm, cy + half], fill=o.rgb)
        draw.rectangle([cx - half, cy - arm, cx + half, cy + arm], fill=o.rgb)
    else:
        raise ValueError(f"unknown shape {o.shape!r}")


def render(scene: Scene) -> Image.Image:
    """Draw a scene as an RGB image of `scene.size` pixels square. Pure: same scene, same pixels."""
    img = Image.new("RGB", (scene.size, scene.size), (scene.background,) * 3)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        _draw(draw, o)
    noise = np.random.Generator(np.random.PCG64(scene.noise_seed)).normal(0.0, NOISE_STD, (scene.size, scene.size, 3))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


# ---------------------------------------------------------------- data sets


def training_batches(seed: int, batch_size: int = 64, group_fraction: float = 0.75) -> Iterator[list[Scene]]:
    """An endless, deterministic stream of batches in which each caption is true of its own image only.

    About `group_fraction` of each batch is whole confusable groups (so in-batch hard negatives are binding
    and order confusions); the rest is count scenes and random pairs.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    n_groups = int(batch_size * group_fraction) // 4
    while True:
        batch: list[Scene] = []

        def add(scenes: list[Scene], batch: list[Scene] = batch) -> None:
            if len(batch) + len(scenes) <= batch_size and not _conflicts(scenes, batch):
                batch.extend(scenes)

        while len(batch) < n_groups * 4:
            colours, shapes, axis = _random_pair_spec(rng)
            add(confusable_group(rng, colours, shapes, axis))
        while len(batch) < batch_size:
            add([random_scene(rng)])
        order = rng.permutation(len(batch))
        yield [batch[i] for i in order]


def sample_set(seed: int, n_groups: int = 50, n_counts: int = 40) -> list[Scene]:
    """A held-out retrieval set: `n_groups` confusable groups (4 images each) and `n_counts` count scenes.

    Each caption is true of exactly one image of the set (checked with :func:`satisfies`, distractors
    included), and the count scenes come in two-vs-three pairs of the same object.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    colours = list(COLOURS)
    specs = sorted(
        {(c, shapes, axis) for c in _pairs(colours) for shapes in _pairs(list(SHAPES)) for axis in ("h", "v")}
    )
    if n_groups > len(specs):
        raise ValueError(f"at most {len(specs)} confusable groups")
    objs = [(c, s) for c in colours for s in SHAPES]
    if n_counts > 2 * len(objs):
        raise ValueError(f"at most {2 * len(objs)} count scenes")
    scenes: list[Scene] = []
    groups = 0
    for idx in rng.permutation(len(specs)):  # a spec whose captions an earlier image makes true is skipped
        if groups == n_groups:
            break
        colours_, shapes_, axis = specs[idx]
        for _ in range(ATTEMPTS):
            group = confusable_group(rng, colours_, shapes_, axis)
            if not _conflicts(group, scenes):
                scenes.extend(group)
                groups += 1
                break
    if groups < n_groups:
        raise ValueError(f"could only place {groups} confusable groups")
    counted = 0
    for idx in rng.permutation(len(objs)):
        if counted >= n_counts:
            break
        c, s = objs[idx]
        ns = (2, 3)[: n_counts - counted]
        for _ in range(ATTEMPTS):
            new = [count_scene(rng, c, s, n) for n in ns]
            if not _conflicts(new, scenes):
                scenes.extend(new)
                counted += len(new)
                break
    if counted < n_counts:
        raise ValueError(f"could only place {counted} count scenes")
    order = rng.permutation(len(scenes))
    return [scenes[i] for i in order]


def _pairs(items: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(items) for b in items[i + 1 :]]
