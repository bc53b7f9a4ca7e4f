"""PyTorch .bin checkpoints, single and sharded, load safely and equal the HF reference; pickles with code are
refused."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bt_search.engine import weights as weights_module
from bt_search.engine.loading import load_engine
from bt_search.engine.weights import ENV_WEIGHTS_CACHE, HUB_BIN_PATTERNS, checkpoint_weights, missing_safetensors
from bt_search.errors import ModelLoadError
from bt_search.media.images import preprocess
from tests.support.checkpoints import CAPTIONS
from tests.support.reference import reference_embeddings, reference_itm

TOL = 1e-4


def bin_checkpoint(safetensors_checkpoint, target, shards: int = 1):
    """A copy of the checkpoint whose weights are pytorch_model.bin (or `shards` files and an index)."""
    shutil.copytree(safetensors_checkpoint, target)
    state = load_file(str(target / "model.safetensors"))
    (target / "model.safetensors").unlink()
    if shards == 1:
        torch.save(state, target / "pytorch_model.bin")
        return target
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        file = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = names[i::shards]
        torch.save({n: state[n] for n in part}, target / file)
        weight_map.update({n: file for n in part})
    (target / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return target


@pytest.mark.parametrize("shards", [1, 3], ids=["single", "sharded"])
def test_bin_checkpoint_equals_reference(tiny_checkpoint, tmp_path, sample_images, shards):
    path = bin_checkpoint(tiny_checkpoint, tmp_path / "bin", shards)
    engine = load_engine(str(path), device="cpu", precision="fp32")  # the reference's precision
    texts = CAPTIONS[: len(sample_images)]
    ref_images, ref_texts = reference_embeddings(tiny_checkpoint, sample_images, texts)
    pixels = np.stack([preprocess(img, engine.preprocessing) for img in sample_images])
    np.testing.assert_allclose(engine.encode_images(pixels), ref_images, atol=TOL)
    np.testing.assert_allclose(engine.encode_texts(texts), ref_texts, atol=TOL)
    itm = engine.itm_scores(engine.text_states(CAPTIONS[0]), engine.vision_states(pixels))
    np.testing.assert_allclose(itm, reference_itm(tiny_checkpoint, sample_images, CAPTIONS[0]), atol=TOL)
    text_only = load_engine(str(path), device="cpu", text_only=True)
    np.testing.assert_allclose(text_only.encode_texts(texts), ref_texts, atol=TOL)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tiny_checkpoint, tmp_path, monkeypatch):
    path = bin_checkpoint(tiny_checkpoint, tmp_path / "evil")
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    state["payload"] = _RunsCode()
    torch.save(state, path / "pytorch_model.bin")
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    with pytest.raises(ModelLoadError, match="could run code"):
        load_engine(str(path), device="cpu")
    assert not called


@pytest.mark.parametrize("shards", [1, 2], ids=["single", "sharded"])
def test_conversion_cache_writes_safetensors_once_then_memory_maps(tiny_checkpoint, tmp_path, monkeypatch, shards):
    path = bin_checkpoint(tiny_checkpoint, tmp_path / "bin", shards)
    cache = tmp_path / "cache"
    monkeypatch.setenv(ENV_WEIGHTS_CACHE, str(cache))
    first = checkpoint_weights(path)
    assert first.format == "safetensors" and first.directory.parent == cache

    def no_unpickling(file):
        raise AssertionError(f"{file} was unpickled again")

    monkeypatch.setattr(weights_module, "load_bin", no_unpickling)
    converted_engine = load_engine(str(path), device="cpu")
    plain = load_engine(str(tiny_checkpoint), device="cpu")
    np.testing.assert_allclose(converted_engine.encode_texts(CAPTIONS), plain.encode_texts(CAPTIONS), atol=1e-6)
    assert converted_engine.model_id == str(path.resolve())  # the index records the source, not the cache
    assert len(list(cache.rglob("*.safetensors"))) == 1


def test_no_weights_names_both_formats(tiny_checkpoint, tmp_path):
    target = tmp_path / "empty"
    shutil.copytree(tiny_checkpoint, target)
    (target / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.safetensors nor pytorch_model\.bin"):
        load_engine(str(target), device="cpu")


def test_hub_downloads_bin_only_when_the_repo_has_no_safetensors(tmp_path, monkeypatch):
    import huggingface_hub

    from bt_search.engine import loading

    calls = []

    def fake_download(repo_id, revision=None, allow_patterns=None):
        calls.append(allow_patterns)
        snapshot = tmp_path / repo_id.replace("/", "--") / ("a" * 40)
        snapshot.mkdir(parents=True, exist_ok=True)
        if repo_id.endswith("new") or "*.bin" in allow_patterns:
            (snapshot / ("model.safetensors" if repo_id.endswith("new") else "pytorch_model.bin")).write_bytes(b"")
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    loading.resolve_checkpoint("org/new")
    assert len(calls) == 1 and not any("bin" in p for p in calls[0])
    calls.clear()
    path, _ = loading.resolve_checkpoint("org/old")
    assert calls[1] == HUB_BIN_PATTERNS and (path / "pytorch_model.bin").exists()
    assert not missing_safetensors(tmp_path / "org--new" / ("a" * 40))
