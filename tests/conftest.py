"""Shared fixtures: tiny random BridgeTower checkpoints built offline, once per session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bt_search_dev.checkpoints import merged_state_dict, save_checkpoint, tiny_config, train_bpe_tokenizer

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


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the real home, XDG dirs or bt-search environment."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    for var in ("BT_SEARCH_INDEX", "BT_SEARCH_MODEL", "BT_SEARCH_DEVICE", "BT_SEARCH_BATCH_SIZE", "BT_SEARCH_WORKERS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer(CAPTIONS * 5, path, vocab_size=400)
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the session (every Ray test module shares it); its address and the environment a
    driver subprocess needs to join it."""
    import ray

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    yield context.address_info["gcs_address"], env  # env holds the HOME where Ray keeps its auth token
    ray.shutdown()


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


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {spec.name: build_checkpoint(spec, root, tokenizer_dir) for spec in SPECS}


@pytest.fixture(scope="session")
def tiny_checkpoint(checkpoints) -> Path:
    return checkpoints[SPECS[0].name]


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    """The tiny checkpoint loaded on CPU in fp32, the precision whose numbers are the reference's (`auto` may
    rerank in bf16 on this CPU; test_model covers it), once per test module."""
    from bt_search.engine.loading import load_engine

    return load_engine(str(tiny_checkpoint), device="cpu", precision="fp32")


def noise_image(seed: int, width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A structured random picture (blocks + noise) so embeddings of different images differ."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((width, height), Image.Resampling.NEAREST)
    noisy = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-20, 21, size=(height, width, 3)), 0, 255)
    return Image.fromarray(noisy.astype(np.uint8)).convert(mode)


@pytest.fixture(scope="session")
def sample_images() -> list[Image.Image]:
    sizes = [(64, 64), (120, 80), (77, 150), (300, 200), (33, 41)]
    return [noise_image(i, w, h) for i, (w, h) in enumerate(sizes)]
