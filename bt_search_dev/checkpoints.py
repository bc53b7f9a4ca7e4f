"""Build BridgeTower checkpoints offline: a BPE tokenizer trained on the spot, configs, and saving.

Tests, benchmarks and the demo-model trainer use these, because no machine here can download weights.
Two on-disk layouts are produced:

- ``"transformers"``: what ``save_pretrained`` writes in transformers 5 (full processor config, tokenizer.json).
- ``"hub"``: what the BridgeTower hub repos ship: ``vocab.json`` + ``merges.txt`` and a bare
  ``preprocessor_config.json`` (``{"size": ..., "max_text_len": ...}``) with no crop size and no mean/std.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BridgeTowerConfig, RobertaTokenizerFast

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa order: pad id 1, as BridgeTower expects


def train_bpe_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 1000) -> RobertaTokenizerFast:
    """Train a byte-level BPE on `texts`, save vocab.json + merges.txt, load it the way hub repos are loaded."""
    from tokenizers import ByteLevelBPETokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    bpe.save_model(str(out_dir))
    return RobertaTokenizerFast.from_pretrained(str(out_dir))


def tiny_config(
    *,
    hidden_size: int = 64,
    text_layers: int = 2,
    vision_layers: int | None = None,
    cross_layers: int = 2,
    heads: int = 2,
    image_size: int = 64,
    patch_size: int = 16,
    vocab_size: int = 1000,
    contrastive_hidden_size: int = 32,
    link_tower_type: str = "add",
    max_position_embeddings: int = 64,
    share_layernorm: bool = True,
) -> BridgeTowerConfig:
    """A small BridgeTower config with ITC heads. Vision width must be a multiple of 64 (64-dim heads)."""
    text_config = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=text_layers,
        num_attention_heads=heads,
        intermediate_size=hidden_size * 4,
        max_position_embeddings=max_position_embeddings,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    vision_config = dict(
        hidden_size=hidden_size,
        num_hidden_layers=vision_layers or text_layers,
        patch_size=patch_size,
        image_size=image_size,
        share_layernorm=share_layernorm,
    )
    return BridgeTowerConfig(
        hidden_size=hidden_size,
        num_hidden_layers=cross_layers,
        num_attention_heads=heads,
        link_tower_type=link_tower_type,
        text_config=text_config,
        vision_config=vision_config,
        contrastive_hidden_size=contrastive_hidden_size,
        logit_scale_init_value=2.6592,
    )


def save_checkpoint(
    out_dir: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: BridgeTowerConfig,
    tokenizer: RobertaTokenizerFast,
    *,
    layout: str = "transformers",
    image_size: int | None = None,
    max_text_len: int = 40,
) -> Path:
    """Save one checkpoint holding backbone + ITC heads + ITM head, in the given layout.

    `state_dict` uses the hub key names: ``bridgetower.*``, ``itc_text_head.*``, ``itc_image_head.*``,
    ``itc_cross_modal_head.*``, ``logit_scale``, ``itm_score.*`` — so both HF reference classes load it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    tensors = {name: t.detach().contiguous().clone() for name, t in state_dict.items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    size = image_size or config.vision_config.image_size
    if layout == "hub":
        tokenizer.backend_tokenizer.model.save(str(out_dir))  # vocab.json + merges.txt, as hub repos ship them
        (out_dir / "preprocessor_config.json").write_text(json.dumps({"size": size, "max_text_len": max_text_len}))
    elif layout == "transformers":
        from transformers import BridgeTowerImageProcessorPil, BridgeTowerProcessor

        tokenizer.model_max_length = max_text_len
        image_processor = BridgeTowerImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"shortest_edge": config.vision_config.image_size}
        )
        BridgeTowerProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return out_dir


def merged_state_dict(itc_model: torch.nn.Module, itm_head: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    """State dict of a BridgeTowerForContrastiveLearning plus an ITM head under ``itm_score.``."""
    state = dict(itc_model.state_dict())
    if itm_head is not None:
        state.update({f"itm_score.{k}": v for k, v in itm_head.state_dict().items()})
    return state
