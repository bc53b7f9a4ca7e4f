"""Fast checks of the synthetic data generator: determinism, captions that say what is drawn, hard pairs.

The drawing checks read the rendered pixels back (palette colour per pixel, connected blobs, blob geometry)
and compare them with a regex parse of the caption, so they do not trust the generator's own bookkeeping.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from bt_search_dev import demo_data as dd
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
SAMPLE_DIR = ROOT / "sample_data" / "images"

PAIR_RE = re.compile(r"^a (\w+) (\w+) (left of|right of|above|below) a (\w+) (\w+)$")
COUNT_RE = re.compile(r"^(two|three) (\w+) (\w+)$")
SINGULAR = {"circles": "circle", "squares": "square", "triangles": "triangle", "stars": "star", "crosses": "cross"}


# ---------------------------------------------------------------- reading pixels back


def colour_map(img: Image.Image) -> np.ndarray:
    """Per pixel: index of the nearest palette colour, or -1 where nothing is near (background)."""
    a = np.asarray(img, dtype=float)
    pal = np.array(list(dd.COLOURS.values()), dtype=float)
    d = np.linalg.norm(a[:, :, None, :] - pal[None, None], axis=-1)
    lab = d.argmin(-1)
    lab[d.min(-1) > 70] = -1
    return lab


def blobs(mask: np.ndarray, min_size: int = 12) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as boolean masks, ignoring specks."""
    seen = np.zeros_like(mask)
    out = []
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        comp = np.zeros_like(mask)
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            comp[y, x] = True
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if comp.sum() >= min_size:
            out.append(comp)
    return out


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def shape_of(mask: np.ndarray) -> str:
    """Name a blob's shape from its pixels alone."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    box = mask[y0 : y1 + 1, x0 : x1 + 1]
    h, w = box.shape
    fill = box.mean()
    corners = [box[:2, :2].mean(), box[:2, -2:].mean(), box[-2:, :2].mean(), box[-2:, -2:].mean()]
    if fill > 0.9:
        return "square"
    if corners[2] > 0.5 and corners[3] > 0.5 and corners[0] < 0.5 and corners[1] < 0.5:
        return "triangle"
    thirds = [
        box[: h // 3, : w // 3],
        box[: h // 3, -(w // 3) :],
        box[-(h // 3) :, : w // 3],
        box[-(h // 3) :, -(w // 3) :],
    ]
    full_cross = bool(box[h // 2, :].all() and box[:, w // 2].all())  # centre row and column filled
    if full_cross and fill >= 0.74:
        return "circle"
    if full_cross and max(t.mean() for t in thirds) < 0.3:  # arms only: the corner thirds are empty
        return "cross"
    if not full_cross and fill < 0.56:
        return "star"
    return "unknown"


def read_objects(img: Image.Image) -> list[tuple[str, str, float, float]]:
    """(colour, shape, x, y) of every object blob in an image, from its pixels alone."""
    lab = colour_map(img)
    out = []
    for i, colour in enumerate(dd.COLOURS):
        for b in blobs(lab == i):
            out.append((colour, shape_of(b), *centroid(b)))
    return out


def caption_true(caption: str, objs: list[tuple[str, str, float, float]]) -> bool:
    """Does the caption hold for the objects read from an image? Counts are exact; relations need a
    clear direction (more than 4 px further along the axis than across it)."""
    if m := COUNT_RE.match(caption):
        n = {"two": 2, "three": 3}[m[1]]
        return sum((c, s) == (m[2], SINGULAR[m[3]]) for c, s, _, _ in objs) == n
    m = PAIR_RE.match(caption)
    assert m, f"unparseable caption {caption!r}"
    c1, s1, rel, c2, s2 = m.groups()
    for ca, sa, ax, ay in objs:
        for cb, sb, bx, by in objs:
            if (ca, sa) != (c1, s1) or (cb, sb) != (c2, s2):
                continue
            dx, dy = bx - ax, by - ay  # b relative to a
            along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[rel]
            if along > abs(across) + 4:
                return True
    return False


def check_drawing(scene: dd.Scene) -> None:
    """Assert that every drawn object reads back as one clean blob and that the caption holds on the pixels."""
    objs = read_objects(dd.render(scene))
    assert len(objs) == len(scene.objects), (scene.caption, objs)
    assert all(shape != "unknown" for _, shape, _, _ in objs), (scene.caption, objs)
    assert caption_true(scene.caption, objs), (scene.caption, objs)


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def sample_scenes() -> list[dd.Scene]:
    return dd.sample_set(dd.SAMPLE_SEED)


def test_render_is_deterministic_for_a_seed():
    a = dd.sample_set(5, n_groups=6, n_counts=6)
    b = dd.sample_set(5, n_groups=6, n_counts=6)
    assert [s.caption for s in a] == [s.caption for s in b]
    assert all(np.array_equal(np.asarray(dd.render(x)), np.asarray(dd.render(y))) for x, y in zip(a, b))
    c = dd.sample_set(6, n_groups=6, n_counts=6)
    assert [np.asarray(dd.render(s)).tobytes() for s in a] != [np.asarray(dd.render(s)).tobytes() for s in c]


def test_training_batches_are_deterministic_with_unique_keys():
    g1, g2 = dd.training_batches(3, batch_size=32), dd.training_batches(3, batch_size=32)
    for _ in range(3):
        b1, b2 = next(g1), next(g2)
        assert [s.caption for s in b1] == [s.caption for s in b2]
        assert b1 == b2
        assert len(b1) == 32 and len({s.key for s in b1}) == 32
    assert [s.caption for s in next(dd.training_batches(4, 32))] != [
        s.caption for s in next(dd.training_batches(3, 32))
    ]


def test_render_size_and_mode():
    img = dd.render(dd.sample_set(0, n_groups=1, n_counts=0)[0])
    assert img.mode == "RGB" and img.size == (dd.IMAGE_SIZE, dd.IMAGE_SIZE)


def test_captions_agree_with_pixels_random_scenes():
    rng = np.random.Generator(np.random.PCG64(11))
    for _ in range(120):
        check_drawing(dd.random_scene(rng))


def test_captions_agree_with_pixels_confusable_groups():
    rng = np.random.Generator(np.random.PCG64(12))
    for axis in ("h", "v"):
        for colours, shapes in [
            (("red", "blue"), ("circle", "square")),
            (("yellow", "purple"), ("star", "cross")),
            (("green", "red"), ("triangle", "circle")),
        ]:
            for scene in dd.confusable_group(rng, colours, shapes, axis):
                check_drawing(scene)


def test_check_drawing_catches_a_lie():
    rng = np.random.Generator(np.random.PCG64(13))
    scene = dd.pair_scene(rng, ("red", "circle"), ("blue", "square"), "left of", distractors=2)
    check_drawing(scene)
    lies = [
        "a red circle right of a blue square",
        "a blue circle left of a red square",
        "a red square left of a blue circle",
        "a red circle above a blue square",
        "a blue square left of a red circle",
    ]
    for lie in lies:
        with pytest.raises(AssertionError):
            check_drawing(dataclasses.replace(scene, caption=lie))
    count = dd.count_scene(rng, "green", "triangle", 3, distractors=1)
    check_drawing(count)
    for lie in ["two green triangles", "three green stars", "three red triangles"]:
        with pytest.raises(AssertionError):
            check_drawing(dataclasses.replace(count, caption=lie))
    with pytest.raises(AssertionError):  # an object missing from the drawing
        check_drawing(dataclasses.replace(scene, objects=scene.objects[:1] + scene.objects[2:]))


def test_distractors_are_drawn_but_never_a_binding_of_the_caption():
    rng = np.random.Generator(np.random.PCG64(14))
    for _ in range(40):
        scene = dd.pair_scene(rng, ("red", "circle"), ("blue", "square"), "above", distractors=2)
        assert len(scene.objects) == 4 and scene.mentioned == 2
        extra = {(o.colour, o.shape) for o in scene.objects[2:]}
        assert not extra & {("red", "circle"), ("blue", "square"), ("red", "square"), ("blue", "circle")}


def test_same_layout_said_both_ways_has_one_key():
    a, b = ("red", "circle"), ("blue", "square")
    assert dd.pair_key(a, b, "left of") == dd.pair_key(b, a, "right of")
    assert dd.pair_key(a, b, "above") == dd.pair_key(b, a, "below")
    assert dd.pair_key(a, b, "left of") != dd.pair_key(b, a, "left of")
    assert dd.pair_key(a, b, "left of") != dd.pair_key(a, b, "above")


def test_sample_set_has_unique_meanings_and_confusable_pairs(sample_scenes):
    scenes = sample_scenes
    assert 100 <= len(scenes) <= 300
    assert len({s.caption for s in scenes}) == len(scenes)
    assert len({s.key for s in scenes}) == len(scenes)
    for s in scenes:  # each caption is true of exactly one image: its own (distractors included)
        assert [t for t in scenes if dd.satisfies(s.key, t)] == [s], s.caption
    pairs = [s.key for s in scenes if s.kind == "pair"]
    keys = set(pairs)
    colour_swaps = position_swaps = 0
    for axis, (c1, s1), (c2, s2) in pairs:
        colour_swaps += (axis, (c2, s1), (c1, s2)) in keys  # "a blue circle left of a red square"
        position_swaps += (axis, (c2, s2), (c1, s1)) in keys  # "a blue square left of a red circle"
    assert colour_swaps == len(pairs) and position_swaps == len(pairs)
    bags = Counter((k[0], frozenset({k[1][0], k[2][0]}), frozenset({k[1][1], k[2][1]})) for k in pairs)
    assert set(bags.values()) == {4}
    counts = defaultdict(set)
    for s in scenes:
        if s.kind == "count":
            counts[s.key[1:3]].add(s.key[3])
    assert all(v == {2, 3} for v in counts.values())  # two-vs-three pairs
    assert any(len(s.objects) > s.mentioned for s in scenes)  # distractors present


def test_sample_captions_read_from_pixels_are_true_of_their_own_image_only(sample_scenes):
    scenes = sample_scenes
    captions = [s.caption for s in scenes]
    for s in scenes[:20]:
        objs = read_objects(dd.render(s))
        assert [c for c in captions if caption_true(c, objs)] == [s.caption]


@pytest.mark.skipif(not (SAMPLE_DIR / "captions.csv").exists(), reason="sample images not generated")
def test_shipped_sample_images_match_the_generator(sample_scenes):
    with open(SAMPLE_DIR / "captions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    scenes = sample_scenes
    assert [r["caption"] for r in rows] == [s.caption for s in scenes]
    assert len({r["file"] for r in rows}) == len(rows)
    for r, s in zip(rows, scenes):
        path = SAMPLE_DIR / r["file"]
        with Image.open(path) as im:
            got = np.asarray(im.convert("RGB"), dtype=int)
        want = np.asarray(dd.render(s), dtype=int)
        if path.suffix == ".png":
            assert np.array_equal(got, want), r["file"]
        else:  # lossy JPEG: close, not equal
            assert np.abs(got - want).mean() < 6, r["file"]
