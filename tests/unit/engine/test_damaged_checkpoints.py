"""A damaged checkpoint is a ModelLoadError that names the file, never an internal error; a sharded index
that points outside its checkpoint directory is refused, never followed."""

from __future__ import annotations

import json
import shutil

import pytest

from bt_search.engine.facts import read_model_facts
from bt_search.engine.loading import load_engine
from bt_search.errors import ModelLoadError


def test_a_truncated_safetensors_file_is_reported_by_name(tiny_checkpoint, tmp_path):
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "copy")
    weights = copy / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    with pytest.raises(ModelLoadError, match=r"model.safetensors is damaged or incomplete"):
        load_engine(str(copy), device="cpu")


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors"])
def test_a_shard_outside_the_checkpoint_is_refused(tiny_checkpoint, tmp_path, shard):
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "copy")
    (copy / "model.safetensors").rename(tmp_path / "outside.safetensors")
    names = _tensor_names(tmp_path / "outside.safetensors")
    index = {"metadata": {}, "weight_map": {name: shard for name in names}}
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="outside the checkpoint directory"):
        load_engine(str(copy), device="cpu")
    with pytest.raises(ModelLoadError, match="outside the checkpoint directory"):
        read_model_facts(str(copy))


def _tensor_names(path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())
