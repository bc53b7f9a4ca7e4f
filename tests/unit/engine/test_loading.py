"""Loading: clear, typed failures for missing heads, missing weights, and unreachable hub ids."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from bt_search.engine.loading import load_engine, resolve_checkpoint
from bt_search.errors import MissingHeadError, ModelLoadError


def _copy_without(checkpoint, tmp_path, prefixes):
    target = tmp_path / "ckpt"
    shutil.copytree(checkpoint, target)
    state = load_file(str(target / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith(prefixes)}, str(target / "model.safetensors"))
    return target


def test_checkpoint_without_itc_heads_names_one_that_has_them(tiny_checkpoint, tmp_path):
    stripped = _copy_without(tiny_checkpoint, tmp_path, ("itc_",))
    with pytest.raises(MissingHeadError, match="bridgetower-large-itm-mlm-itc"):
        load_engine(str(stripped), device="cpu")


def test_checkpoint_without_itm_head_still_encodes_but_refuses_rerank(tiny_checkpoint, tmp_path):
    stripped = _copy_without(tiny_checkpoint, tmp_path, ("itm_score.",))
    engine = load_engine(str(stripped), device="cpu")
    full = load_engine(str(tiny_checkpoint), device="cpu")
    assert not engine.has_itm and full.has_itm
    np.testing.assert_allclose(engine.encode_texts(["a red circle"]), full.encode_texts(["a red circle"]), atol=1e-6)
    pixels = np.zeros((1, 3, 64, 64), dtype=np.float32)
    with pytest.raises(MissingHeadError, match="`rerank=False`"):
        engine.itm_scores(engine.text_states("a red circle"), engine.vision_states(pixels))


def test_offline_hub_id_says_what_to_do():
    with pytest.raises(ModelLoadError) as info:
        load_engine("BridgeTower/bridgetower-large-itm-mlm-itc", device="cpu")
    message = str(info.value)
    assert "`model`" in message and "HF_HUB_OFFLINE" in message


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nope"))


def test_local_directory_has_no_revision(tiny_checkpoint):
    path, revision = resolve_checkpoint(str(tiny_checkpoint))
    assert path == tiny_checkpoint.resolve() and revision is None


def test_text_only_engine_reads_no_vision_weights_and_embeds_the_same(tiny_checkpoint):
    full = load_engine(str(tiny_checkpoint), device="cpu")
    text_only = load_engine(str(tiny_checkpoint), device="cpu", text_only=True)
    texts = ["a red circle left of a blue square", "two cats"]
    np.testing.assert_allclose(text_only.encode_texts(texts), full.encode_texts(texts), atol=1e-6)
    assert text_only.embedding_fingerprint() == full.embedding_fingerprint()
    held = sum(p.numel() for p in text_only.backbone.parameters())
    assert held == sum(p.numel() for p in full.backbone.text_model.parameters()) - _pooler_size(full)
    assert not text_only.has_vision and not hasattr(text_only.backbone, "vision_model")
    with pytest.raises(RuntimeError, match="text_only"):
        text_only.encode_images(np.zeros((1, 3, 64, 64), dtype=np.float32))


def _pooler_size(engine) -> int:
    return sum(p.numel() for p in engine.backbone.text_model.pooler.parameters())
