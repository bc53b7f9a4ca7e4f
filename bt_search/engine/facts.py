"""What the Ray driver needs of the model, read from the checkpoint's files without torch.

The driver opens the index (model, revision, embedding size, preprocessing, fingerprint) and hands the
preprocessing to the decode tasks; only the actors run the model. For a safetensors checkpoint these facts
come from config.json, the processor config and the two ITC text-head tensors, so the driver never imports
torch or transformers (seconds per run). Any other checkpoint (.bin weights, an unusual config) is loaded
text-only as before, which also raises the loader's own errors for a checkpoint that cannot serve.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bt_search.engine.naming import model_name
from bt_search.engine.weights import (
    ITC_KEYS,
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX,
    embedding_fingerprint,
    read_weight_map,
    resolve_checkpoint,
)
from bt_search.media.images import Preprocessing, preprocessing_from_checkpoint

FINGERPRINT_KEYS = ("itc_text_head.fc.weight", "itc_text_head.fc.bias")  # the text head's state_dict order
AS_FLOAT32 = {  # safetensors dtype -> its values as float32, exactly as torch's .float() gives them
    "F32": lambda raw: np.frombuffer(raw, "<f4"),
    "F16": lambda raw: np.frombuffer(raw, "<f2").astype(np.float32),
    "BF16": lambda raw: (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32),
}


@dataclass(frozen=True)
class ModelFacts:
    """The parts of a BridgeTowerEngine that `IndexIdentity.of` and the Ray pipeline read."""

    model_id: str
    revision: str | None
    embedding_dim: int
    preprocessing: Preprocessing
    fingerprint: str

    def embedding_fingerprint(self) -> str:
        return self.fingerprint


def driver_model(model: str, precision: str = "auto"):
    """The model facts for the driver: torch-free when the checkpoint allows, else a text-only engine."""
    facts = read_model_facts(model)
    if facts is not None:
        return facts
    from bt_search.engine.loading import load_engine

    return load_engine(model, device="cpu", precision=precision, text_only=True)


def read_model_facts(model: str, revision: str | None = None) -> ModelFacts | None:
    """The facts of a safetensors BridgeTower checkpoint with ITC heads; None for any other checkpoint."""
    checkpoint, resolved_revision = resolve_checkpoint(model, revision)
    config = _json(checkpoint / "config.json")
    image_size = (config.get("vision_config") or {}).get("image_size")
    headers = _safetensors_headers(checkpoint)
    if config.get("model_type") != "bridgetower" or not image_size or "contrastive_hidden_size" not in config:
        return None
    if headers is None or any(key not in headers for key in (*ITC_KEYS, *FINGERPRINT_KEYS)):
        return None
    tensors = [_read_tensor(headers[key]) for key in FINGERPRINT_KEYS]
    if any(tensor is None for tensor in tensors):
        return None
    return ModelFacts(
        model_id=model_name(model),
        revision=resolved_revision,
        embedding_dim=int(headers[FINGERPRINT_KEYS[0]][1]["shape"][0]),
        preprocessing=preprocessing_from_checkpoint(checkpoint, int(image_size)),
        fingerprint=embedding_fingerprint(tensors),
    )


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _safetensors_headers(checkpoint: Path) -> dict[str, tuple[Path, dict]] | None:
    """Tensor name -> (file, header entry) over the single file or every shard; None without safetensors."""
    index = checkpoint / SAFETENSORS_INDEX  # its shards are checked to lie inside the checkpoint
    files = sorted(set(read_weight_map(index).values())) if index.is_file() else [checkpoint / SAFETENSORS_FILE]
    headers: dict[str, tuple[Path, dict]] = {}
    for file in files:
        try:
            with open(file, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            return None
        start = 8 + length
        headers.update(
            {name: (file, {**entry, "start": start}) for name, entry in header.items() if name != "__metadata__"}
        )
    return headers


def _read_tensor(located: tuple[Path, dict]) -> np.ndarray | None:
    file, entry = located
    convert = AS_FLOAT32.get(entry.get("dtype"))
    if convert is None:
        return None
    begin, end = entry["data_offsets"]
    with open(file, "rb") as handle:
        handle.seek(entry["start"] + begin)
        raw = handle.read(end - begin)
    return convert(raw).reshape(entry["shape"])
