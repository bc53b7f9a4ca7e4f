"""Tiny random BridgeTower checkpoints in every layout the loader reads, built offline from a BPE tokenizer
trained on CAPTIONS (the session fixtures in tests/conftest.py call these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bt_search_dev.checkpoints import merged_state_dict, save_checkpoint, tiny_config

CAPTIONS = [
    "a red circle left of a blue square",
    "two green triangles on a white background",
    "a yellow star above a red cross",
    "three small blue circles in a row",
    "a photo of two cats sleeping on a couch",
    "a large purple square next to a tiny orange dot",
]


@dataclass(frozen=True)
class TinySpec:
    name: str
    layout: str = "transformers"
    link_tower_type: str = "add"
    image_size: int = 64
    patch_size: int = 16
    hidden_size: int = 64
    text_layers: int = 3
    cross_layers: int = 2
    processor_size: int | None = None  # hub layout: the bare preprocessor_config "size"


SPECS = [
    TinySpec("add-64-p16"),
    TinySpec("scaled-56-p14", link_tower_type="scaled_add", image_size=56, patch_size=14),
    TinySpec("interp-48-p16-hub", layout="hub", link_tower_type="interpolate", image_size=48, processor_size=44),
    TinySpec("add-70-p14-hub", layout="hub", image_size=70, patch_size=14, hidden_size=128, cross_layers=3),
]


def build_checkpoint(spec: TinySpec, root: Path, tokenizer_dir: Path, with_itm: bool = True, seed: int = 0) -> Path:
    from transformers import BridgeTowerForContrastiveLearning, RobertaTokenizerFast
    from transformers.models.bridgetower.modeling_bridgetower import BridgeTowerITMHead

    tokenizer = RobertaTokenizerFast.from_pretrained(str(tokenizer_dir))
    config = tiny_config(
        hidden_size=spec.hidden_size,
        text_layers=spec.text_layers,
        cross_layers=spec.cross_layers,
        heads=2,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        vocab_size=len(tokenizer),
        link_tower_type=spec.link_tower_type,
    )
    torch.manual_seed(seed)
    model = BridgeTowerForContrastiveLearning(config).eval()
    _perturb_link_parameters(model)
    itm = BridgeTowerITMHead(config.hidden_size * 2) if with_itm else None
    return save_checkpoint(
        root / spec.name,
        merged_state_dict(model, itm),
        config,
        tokenizer,
        layout=spec.layout,
        image_size=spec.processor_size,
    )


def _perturb_link_parameters(model) -> None:
    """Move link-tower scalars and LayerNorms off their init values, so a wrong link formula shows up."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "link_tower" in name or "layernorm" in name.lower() or "ln_" in name:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
