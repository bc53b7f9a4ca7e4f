"""Shared benchmark set-up: a base-shaped random BridgeTower checkpoint (built once, cached) and timing."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bt_search_dev.checkpoints import merged_state_dict, save_checkpoint, train_bpe_tokenizer

CACHE = Path(__file__).resolve().parent.parent / ".bench"
TOKENIZER_TEXTS = [
    "a photo of two cats sleeping on a couch",
    "a red circle left of a blue square",
    "people walking on a beach at sunset",
    "a bowl of fruit on a wooden table",
] * 50


def base_shaped_checkpoint(layout: str = "transformers") -> Path:
    """BridgeTower-base shapes (768 wide, 12+12 unimodal layers, 6 cross layers, 288 px, patch 16), random."""
    from transformers import BridgeTowerConfig, BridgeTowerForContrastiveLearning
    from transformers.models.bridgetower.modeling_bridgetower import BridgeTowerITMHead

    target = CACHE / f"base-random-{layout}"
    if (target / "model.safetensors").is_file():
        return target
    tokenizer = train_bpe_tokenizer(TOKENIZER_TEXTS, CACHE / "tokenizer", vocab_size=2000)
    config = BridgeTowerConfig(
        text_config=dict(vocab_size=len(tokenizer)),
        vision_config=dict(image_size=288, patch_size=16),
        contrastive_hidden_size=512,
        logit_scale_init_value=2.6592,
    )
    torch.manual_seed(0)
    model = BridgeTowerForContrastiveLearning(config).eval()
    itm = BridgeTowerITMHead(config.hidden_size * 2)
    return save_checkpoint(target, merged_state_dict(model, itm), config, tokenizer, layout=layout, max_text_len=50)


def large_config(vocab_size: int):
    from transformers import BridgeTowerConfig

    # The shapes of BridgeTower/bridgetower-large-itm-mlm-itc (its config.json).
    return BridgeTowerConfig(
        hidden_size=1024,
        num_hidden_layers=6,
        num_attention_heads=16,
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            max_position_embeddings=514,
        ),
        vision_config=dict(hidden_size=1024, num_hidden_layers=24, patch_size=14, image_size=294),
        contrastive_hidden_size=512,
        logit_scale_init_value=2.6592,
    )


def shaped_checkpoint(shape: str) -> Path:
    """A random checkpoint of BridgeTower-base (`base`) or of the default model's (`large`) shapes, cached."""
    from transformers import BridgeTowerForContrastiveLearning
    from transformers.models.bridgetower.modeling_bridgetower import BridgeTowerITMHead

    if shape == "base":
        return base_shaped_checkpoint()
    target = CACHE / "large-random"
    if (target / "model.safetensors").is_file():
        return target
    tokenizer = train_bpe_tokenizer(TOKENIZER_TEXTS, CACHE / "tokenizer", vocab_size=2000)
    config = large_config(len(tokenizer))
    torch.manual_seed(0)
    model = BridgeTowerForContrastiveLearning(config).eval()
    itm = BridgeTowerITMHead(config.hidden_size * 2)
    return save_checkpoint(target, merged_state_dict(model, itm), config, tokenizer, max_text_len=50)


def timed(fn, repeat: int = 1) -> float:
    """Best wall time of `repeat` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
