"""The int8 rerank's copies of the weights (bt_search/engine/quantized.py): built up front, in a pool of threads,
as each half of the rerank first enters int8, and the same copies, with the same numbers, as the lazy path makes
when a product first reads its weight (which stays, for products no plan names)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from bt_search.engine import quantized
from bt_search.engine.loading import load_engine
from bt_search.engine.model import QUICK_GELU_SCALE
from bt_search.engine.quantized import rerank_products
from tests.support.checkpoints import SPECS
from tests.support.int8 import TEXTS, fresh, lazy_rerank, linear_out, pixels, rerank, watch_builds, watch_lazy_copies


@pytest.fixture(scope="module")
def int8_engines(checkpoints):
    return {name: load_engine(str(path), device="cpu", precision="int8") for name, path in checkpoints.items()}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_planned_copies_equal_the_lazily_built_ones(spec, int8_engines, sample_images, monkeypatch):
    """Same keys (weight, bias, alpha, beta), sizes and int8 products as the lazy path's, and the same ITM bit for
    bit, over texts whose lengths make the cross-attention pick each of its associations."""
    engine = int8_engines[spec.name]
    planned, lazy = fresh(engine), fresh(engine)
    images = pixels(engine, sample_images)
    planned_states, planned_scores = rerank(planned, images)
    lazy_states, lazy_scores = lazy_rerank(monkeypatch, lazy, images)
    built, made = rerank_products(planned), rerank_products(lazy)
    assert built._copies.keys() == made._copies.keys()
    assert (len(built), built.nbytes, built.fp32_nbytes) == (len(made), made.nbytes, made.fp32_nbytes)
    scale = QUICK_GELU_SCALE
    assert {key[2:] for key in built._copies} == {(1.0, 1.0), (scale, scale), (1 / scale, 1.0)}, "the MLP's scales"
    pairs = [entry for key, entry in built._copies.items() if isinstance(key[0], tuple)]
    assert pairs, "a key/value concatenation is among them"
    assert {(entry[0], entry[1]) for entry in pairs} == {(None, None)}, "no fp32 concatenation is kept"
    for key, entry in made._copies.items():
        ours, theirs = (linear_out(e[2], torch.Generator().manual_seed(len(key))) for e in (built._copies[key], entry))
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(planned_states, lazy_states, rtol=0, atol=0)
    for ours, theirs in zip(planned_scores, lazy_scores):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_a_planned_rerank_makes_no_lazy_copy(spec, int8_engines, sample_images, monkeypatch):
    """Every copy the rerank reads was built up front (a new text length plans its own), none lazily; the copies
    are what a rerank without a plan makes."""
    engine = fresh(int8_engines[spec.name])
    images = pixels(engine, sample_images)
    lazy_copies = watch_lazy_copies(monkeypatch)
    _, scores = rerank(engine, images)
    assert lazy_copies == []
    _, lazy_scores = lazy_rerank(monkeypatch, fresh(engine), images)
    assert len(lazy_copies) == len(rerank_products(engine)) > 0, "the lazy path is watched (else this proves nothing)"
    for ours, theirs in zip(scores, lazy_scores):
        np.testing.assert_array_equal(ours, theirs)


def test_a_product_outside_the_plan_still_gets_its_copy(int8_engines, sample_images, monkeypatch):
    """A registered weight no plan names (a key projection alone: the attention multiplies by it concatenated with
    the value's, or in bmm's) still gets an int8 copy when a product first reads it, once."""
    engine = fresh(int8_engines[SPECS[0].name])
    rerank(engine, pixels(engine, sample_images), TEXTS[:1])
    products = rerank_products(engine)
    before = len(products)
    lazy_copies = watch_lazy_copies(monkeypatch)
    key = engine.backbone.cross_modal_text_layers[0].crossattention.self.key
    x = torch.randn(4, key.in_features, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), products.active():
        first, again = (torch.nn.functional.linear(x, key.weight, key.bias) for _ in range(2))
    assert len(lazy_copies) == 1 and len(products) == before + 1
    expected = torch.ops.quantized.linear_dynamic(x, quantized._prepack(key.weight, key.bias), True)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    torch.testing.assert_close(first, torch.nn.functional.linear(x, key.weight, key.bias), rtol=0, atol=0.05)
    assert not torch.equal(first, torch.nn.functional.linear(x, key.weight, key.bias)), "it ran in int8"


def test_planned_copies_are_built_by_a_pool_of_torch_threads(int8_engines, sample_images, monkeypatch):
    """One pool per half of the rerank, of torch.get_num_threads() workers, builds every copy off the caller's
    thread (prepacking releases the GIL, so they build in parallel)."""
    pools = []

    class Recorded(ThreadPoolExecutor):
        def __init__(self, max_workers=None, **kwargs):
            pools.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(quantized, "ThreadPoolExecutor", Recorded)
    engine = fresh(int8_engines[SPECS[0].name])
    images = pixels(engine, sample_images)
    builders = watch_builds(monkeypatch)
    _, scores = rerank(engine, images, TEXTS[:1])
    assert pools == [torch.get_num_threads()] * 2, "vision_states, then itm_scores"
    assert len(builders) == len(rerank_products(engine)) > 0
    assert threading.current_thread() not in builders
    assert {thread.name.startswith("bt-int8-prepack") for thread in builders} == {True}
    _, lazy_scores = lazy_rerank(monkeypatch, fresh(engine), images, TEXTS[:1])
    np.testing.assert_array_equal(scores[0], lazy_scores[0])


def test_concurrent_first_reranks_build_one_set(int8_engines, sample_images, monkeypatch):
    """Server threads reranking at once on a cold engine: one set of copies, each built once."""
    engine = fresh(int8_engines[SPECS[0].name])
    images = pixels(engine, sample_images)
    _, expected = lazy_rerank(monkeypatch, fresh(engine), images, TEXTS[:2])
    builders = watch_builds(monkeypatch)
    start = threading.Barrier(3)

    def first_rerank(_):
        start.wait()
        return rerank(engine, images, TEXTS[:2])[1]

    with ThreadPoolExecutor(3) as threads:
        results = list(threads.map(first_rerank, range(3)))
    assert len(builders) == len(rerank_products(engine)) > 0
    for scores in results:
        for ours, theirs in zip(scores, expected):
            np.testing.assert_array_equal(ours, theirs)


def test_an_engine_that_only_embeds_builds_no_copies(int8_engines, sample_images):
    engine = fresh(int8_engines[SPECS[0].name])
    embeddings = engine.encode_images(pixels(engine, sample_images))
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    engine.encode_texts(TEXTS)
    assert getattr(engine, "_int8_products", None) is None
