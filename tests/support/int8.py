"""The int8 rerank's copies (bt_search/engine/quantized.py): fresh engines over one backbone, a rerank, and
watches on how the copies get built."""

from __future__ import annotations

import copy
import threading

import numpy as np
import torch

from bt_search.engine import quantized
from bt_search.media.images import preprocess
from tests.support.checkpoints import CAPTIONS

# Texts whose lengths (10, 12 and 32 tokens) make the tiny checkpoints' cross-attention pick each association
# (model._association), so a rerank over all three asks for every kind of product.
TEXTS = [CAPTIONS[0], CAPTIONS[5], " ".join(CAPTIONS[:4])]


def fresh(engine):
    """A copy of an int8 engine over the same backbone (so copies' keys, which are tensor ids, compare), with no
    int8 copies yet."""
    copied = copy.copy(engine)
    vars(copied).pop("_int8_products", None)
    return copied


def pixels(engine, images) -> np.ndarray:
    return np.stack([preprocess(img, engine.preprocessing) for img in images])


def rerank(engine, images: np.ndarray, texts=TEXTS) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Vision states of the images, then each text's ITM scores against them."""
    states = engine.vision_states(images)
    return states, [engine.itm_scores(engine.text_states(text), states) for text in texts]


def lazy_rerank(monkeypatch, engine, images: np.ndarray, texts=TEXTS):
    """`rerank` with no copies built up front: each made as a product first reads its weight."""
    with monkeypatch.context() as patch:
        patch.setattr(quantized.Int8Products, "prepare", lambda self, plan, products, workers=None: None)
        return rerank(engine, images, texts)


def watch_lazy_copies(monkeypatch) -> list[tuple]:
    """Arguments of each copy the lazy path (Int8Products._pack) makes from now on."""
    calls = []
    pack = quantized.Int8Products._pack

    def counted(self, *args):
        calls.append(args)
        return pack(self, *args)

    monkeypatch.setattr(quantized.Int8Products, "_pack", counted)
    return calls


def watch_builds(monkeypatch) -> list[threading.Thread]:
    """The thread that built each copy (planned or lazy) from now on."""
    threads = []
    entry = quantized._entry

    def recorded(*args):
        threads.append(threading.current_thread())
        return entry(*args)

    monkeypatch.setattr(quantized, "_entry", recorded)
    return threads


def linear_out(packed, generator: torch.Generator) -> torch.Tensor:
    """`quantized::linear_dynamic` by a packed copy on a random input of its width."""
    weight, _ = torch.ops.quantized.linear_unpack(packed)
    x = torch.randn(5, weight.shape[1], generator=generator)
    return torch.ops.quantized.linear_dynamic(x, packed, True)
