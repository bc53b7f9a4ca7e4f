"""The pointing-game harness (bt_search_dev/pointing.py) scores what it should: a map peaking on the named object
hits, one peaking elsewhere misses, the chance levels are the targets' shares, and a run over a few sample scenes
with the demo model adds up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bt_search.search.hits import Explanation
from bt_search_dev import demo_data
from bt_search_dev.pointing import (
    Tally,
    area_fraction,
    box,
    cell_fraction,
    peak_point,
    pointing_game,
    score_explanation,
    targets,
)

ROOT = Path(__file__).resolve().parents[3]
FULL = (0.0, 0.0, 1.0, 1.0)


def _scene():
    return demo_data.pair_scene(
        np.random.default_rng(5), ("red", "circle"), ("blue", "square"), "left of", distractors=1
    )


def _one_hot_on(obj, grid=(4, 4)) -> tuple[float, ...]:
    col, row = demo_data.cell_of(obj)
    values = [0.0] * (grid[0] * grid[1])
    values[row * grid[1] + col] = 1.0
    return tuple(values)


def test_a_map_peaking_on_the_named_object_scores_one_and_elsewhere_zero():
    scene = _scene()
    red, blue, distractor = scene.objects
    on_red, on_distractor = _one_hot_on(red), _one_hot_on(distractor)
    explanation = Explanation("test", (4, 4), FULL, on_red, (("red", on_red), ("square", on_distractor)))
    tallies: dict[str, Tally] = {}
    score_explanation(scene, explanation, tallies)
    assert tallies["query"].hits == tallies["colour"].hits == 1  # the query names red; "red" points at it
    assert tallies["shape"].hits == 0 and tallies["shape"].trials == 1  # "square" pointed at the distractor
    assert tallies["colour"].per_word == {"red": [1, 1]}


def test_chance_levels_are_the_targets_shares_of_pixels_and_cells():
    box_ = (0.0, 0.0, 16.0, 32.0)  # a quarter of the width, half the height of a 64 px image
    assert area_fraction([box_], (64, 64)) == pytest.approx(1 / 8)
    assert cell_fraction([box_], (4, 4), FULL, (64, 64)) == pytest.approx(2 / 16)  # cells (0,0) and (0,1)
    rng = np.random.default_rng(0)  # a random cell's peak hits as often as cell_fraction says
    hits = [inside_box(peak_point(rng.random(16), (4, 4), FULL, (64, 64)), box_) for _ in range(4000)]
    assert np.mean(hits) == pytest.approx(2 / 16, abs=0.02)


def inside_box(point, b) -> bool:
    return b[0] <= point[0] <= b[2] and b[1] <= point[1] <= b[3]


def test_the_peak_maps_through_the_window():
    # a map over the right half of the image only: its top-left cell's centre is a quarter in, not an eighth
    assert peak_point([1, 0, 0, 0], (2, 2), (0.5, 0.0, 1.0, 1.0), (100, 100)) == (62.5, 25.0)


def test_targets_of_words():
    scene = _scene()
    assert targets(scene, None) == [box(o) for o in scene.objects[:2]]
    assert targets(scene, "circles") == [box(o) for o in scene.objects if o.shape == "circle"]
    assert targets(scene, "left") == []


def test_the_harness_runs_on_sample_scenes_with_the_demo_model():
    from bt_search.engine.loading import load_engine

    engine = load_engine(str(ROOT / "sample_data" / "demo-model"), device="cpu", precision="fp32")
    rng = np.random.default_rng(demo_data.SAMPLE_SEED)  # scenes as the sample set draws them (it draws 240)
    scenes = [demo_data.random_scene(rng) for _ in range(3)]
    images = [demo_data.render(scene) for scene in scenes]
    tallies = pointing_game(engine, scenes, images, "rollout")
    query = tallies["query"].summary()
    assert query["trials"] == 3 and 0 <= query["accuracy"] <= 1
    words = sum(len({w for w in s.caption.split() if targets(s, w)}) for s in scenes)
    assert tallies["colour"].trials + tallies["shape"].trials == words  # each colour and shape word of a caption
    expected_cells = np.mean([cell_fraction(targets(s, None), (4, 4), FULL, (64, 64)) for s in scenes])
    assert query["random_cell"] == pytest.approx(expected_cells)
