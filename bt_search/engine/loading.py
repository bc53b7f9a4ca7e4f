"""Resolve a model string (hub id or local directory) and load it once into a `BridgeTowerEngine`.

The checkpoint is loaded as `BridgeTowerForContrastiveLearning` (backbone + ITC heads) and the ITM head's two
tensors are read from the same weight files: one backbone serves ITC and ITM. Weights come from safetensors,
or from PyTorch `.bin` files read by torch's weights-only unpickler (weights.py); no remote code is ever run.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from bt_search.config import DEFAULT_MODEL
from bt_search.engine.model import BridgeTowerEngine, Heads
from bt_search.engine.naming import model_name
from bt_search.engine.quantized import int8_engine
from bt_search.engine.text_tower import (
    ContrastiveHead,
    FastTokenizer,
    TextModel,
    light_config,
    light_tokenizer_possible,
)
from bt_search.engine.weights import ITC_KEYS, Weights, checkpoint_weights, resolve_checkpoint
from bt_search.errors import MissingHeadError, ModelLoadError, UsageError
from bt_search.media.images import preprocessing_from_checkpoint

ITM_PREFIX = "itm_score.fc."


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("`device=cuda` was asked for but no CUDA GPU is visible to torch; use `device=cpu`")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX on x86, BF16 on ARM). Elsewhere bf16 is
    emulated and slower."""
    cpu = getattr(torch, "cpu", None)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, probe, lambda: False)()) for probe in probes) or "bf16" in _arm_cpu_features()


def _arm_cpu_features() -> set[str]:
    """The `Features` line of /proc/cpuinfo on ARM Linux (empty elsewhere; torch has no ARM BF16 probe)."""
    if platform.machine().lower() not in ("aarch64", "arm64"):
        return set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("Features") for flag in line.split(":")[-1].split()}


def resolve_dtypes(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(embedding dtype, rerank dtype) for `--precision`.

    `auto` keeps ITC embeddings in fp32 off CUDA (index and query vectors stay the reference's), and reranks
    in bf16 where the hardware multiplies it natively: CUDA, and CPUs with AVX512-BF16, AMX or ARM BF16, where
    bf16 halves the rerank's time and moves ITM by < 0.01 (docs/performance.md, "CPU experience"). Other CPUs
    rerank in int8 (`torch.int8`: quantized.py), where this torch has int8 kernels. `int8` asks for that
    anywhere on CPU; the embeddings stay fp32 either way.
    """
    choices = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16, torch.bfloat16
        if device.type != "cpu":
            return torch.float32, torch.float32
        if cpu_has_native_bf16():
            return torch.float32, torch.bfloat16
        return torch.float32, torch.int8 if int8_engine() else torch.float32
    if precision == "int8":
        if device.type != "cpu":
            raise UsageError(f"`precision=int8` runs on CPU only, not {device.type}; use `precision=auto` there")
        if int8_engine() is None:
            raise UsageError("this torch has no int8 CPU kernels for `precision=int8`; use `precision=fp32`")
        return torch.float32, torch.int8
    if precision not in choices:
        raise UsageError(f"unknown precision {precision!r}; use auto, fp32, bf16, fp16 or int8")
    return choices[precision], choices[precision]


def precision_facts(device: str = "auto", precision: str = "auto") -> dict[str, str]:
    """What `device` and `precision` compute in on this machine, named as serve's /health names them."""
    torch_device = resolve_device(device)
    dtype, rerank_dtype = (str(t).removeprefix("torch.") for t in resolve_dtypes(precision, torch_device))
    return {"device": torch_device.type, "dtype": dtype, "rerank_dtype": rerank_dtype}


def load_engine(
    model: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    precision: str = "auto",
    revision: str | None = None,
    text_only: bool = False,
) -> BridgeTowerEngine:
    """Load `model` once: ITC heads required, ITM head optional (rerank is refused without it).

    `text_only` reads just the text tower and the ITC text head (cosine search needs nothing else): the
    vision tower, cross-modal layers and ITM head are neither read from disk nor held in memory. Where the
    checkpoint allows, they are then built without importing transformers (text_tower.py).
    """
    torch_device = resolve_device(device)
    dtype, rerank_dtype = resolve_dtypes(precision, torch_device)
    checkpoint, resolved_revision = resolve_checkpoint(model, revision)
    light = light_config(checkpoint) if text_only else None
    config = light or _read_config(checkpoint)
    weights = checkpoint_weights(checkpoint)
    keys = weights.files
    missing = [k for k in ITC_KEYS if k not in keys]
    if missing or not hasattr(config, "contrastive_hidden_size"):
        raise MissingHeadError(
            f"{model} has no ITC (contrastive) heads, which search needs; use a checkpoint that has them, such as "
            f"{DEFAULT_MODEL} (the bridgetower-base* repos ship only the ITM/MLM heads)"
        )
    if light is not None:
        backbone, heads = _load_light_text_tower(weights, light, dtype)
    elif text_only:
        backbone, heads = _load_text_tower(weights, config, dtype)
    else:
        contrastive = _load_contrastive(weights, config, dtype)
        backbone = contrastive.bridgetower
        heads = Heads(contrastive.itc_text_head, contrastive.itc_image_head, _load_itm_head(weights, config, dtype))
    return BridgeTowerEngine(
        backbone.to(torch_device),
        heads.to(torch_device),
        _load_tokenizer(checkpoint, light=light is not None),
        preprocessing_from_checkpoint(checkpoint, light.image_size if light else config.vision_config.image_size),
        model_id=model_name(model),
        revision=resolved_revision,
        device=torch_device,
        dtype=dtype,
        rerank_dtype=rerank_dtype,
        max_text_len=config.text_config.max_position_embeddings - 2,  # RoBERTa positions start after padding_idx
    )


def _read_config(checkpoint: Path):
    from transformers import BridgeTowerConfig

    try:
        config = BridgeTowerConfig.from_pretrained(str(checkpoint))
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"{checkpoint} has no readable BridgeTower config.json ({err})") from None
    if getattr(config, "model_type", None) != "bridgetower":
        raise ModelLoadError(f"{checkpoint} is not a BridgeTower checkpoint (model_type {config.model_type!r})")
    return config


def _load_contrastive(weights: Weights, config, dtype: torch.dtype):
    from transformers import BridgeTowerForContrastiveLearning
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the ITM/MLM keys this class does not hold are expected, not news
    hf_logging.disable_progress_bar()  # stderr belongs to bt-search's own progress
    try:
        if weights.format == "safetensors":  # memory-mapped by transformers itself
            model = BridgeTowerForContrastiveLearning.from_pretrained(
                str(weights.directory), config=config, dtype=dtype, use_safetensors=True, trust_remote_code=False
            )
        else:  # tensors already read by the weights-only unpickler; transformers never opens the pickle
            model = BridgeTowerForContrastiveLearning.from_pretrained(
                None, config=config, state_dict=weights.read(), dtype=dtype, trust_remote_code=False
            )
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"could not load weights from {weights.directory}: {err}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval()


def _load_itm_head(weights: Weights, config, dtype: torch.dtype):
    from transformers.models.bridgetower.modeling_bridgetower import BridgeTowerITMHead

    if not any(name.startswith(ITM_PREFIX) for name in weights.files):
        return None
    return _load_module(BridgeTowerITMHead(config.hidden_size * 2), "itm_score.", weights, dtype)


class TextTower(torch.nn.Module):
    """The part of BridgeTowerModel that text-only search reads: its config and text model."""

    def __init__(self, config, text_model: torch.nn.Module):
        super().__init__()
        self.config = config
        self.text_model = text_model


def _load_text_tower(weights: Weights, config, dtype: torch.dtype):
    from transformers.models.bridgetower.modeling_bridgetower import BridgeTowerContrastiveHead, BridgeTowerTextModel

    with torch.device("meta"):  # no random initialisation of weights that are about to be replaced
        text_model = BridgeTowerTextModel(config.text_config, add_pooling_layer=False)
        text_head = BridgeTowerContrastiveHead(config.hidden_size, config.contrastive_hidden_size)
    text_model = _load_module(text_model, "bridgetower.text_model.", weights, dtype)
    _restore_text_buffers(text_model, config.text_config)
    config._attn_implementation = config.text_config._attn_implementation  # as the full model sets it
    heads = Heads(_load_module(text_head, "itc_text_head.", weights, dtype), None, None)
    return TextTower(config, text_model).eval(), heads


def _load_light_text_tower(weights: Weights, config, dtype: torch.dtype):
    """`_load_text_tower` without transformers: the same parameters in text_tower.py's torch modules."""
    with torch.device("meta"):
        text_model = TextModel(config.text_config)
        text_head = ContrastiveHead(config.hidden_size, config.contrastive_hidden_size)
    text_model = _load_module(text_model, "bridgetower.text_model.", weights, dtype)
    heads = Heads(_load_module(text_head, "itc_text_head.", weights, dtype), None, None)
    return TextTower(config, text_model).eval(), heads


def _restore_text_buffers(text_model: torch.nn.Module, text_config) -> None:
    """Non-persistent buffers are not in the checkpoint: rebuild them as the embeddings module does."""
    positions = torch.arange(text_config.max_position_embeddings).expand((1, -1))
    text_model.embeddings.register_buffer("position_ids", positions, persistent=False)
    text_model.embeddings.register_buffer("token_type_ids", torch.zeros_like(positions), persistent=False)


def _load_module(module: torch.nn.Module, prefix: str, weights: Weights, dtype: torch.dtype) -> torch.nn.Module:
    """Fill `module` with the checkpoint tensors under `prefix`, reading only those from disk."""
    state = weights.read([name for name in weights.files if name.startswith(prefix)])
    wanted = set(module.state_dict())
    local = {name[len(prefix) :]: tensor for name, tensor in state.items()}
    module.load_state_dict({k: v.to(dtype) for k, v in local.items() if k in wanted}, strict=True, assign=True)
    return module.eval()


def _load_tokenizer(checkpoint: Path, light: bool = False):
    if light and light_tokenizer_possible(checkpoint):
        try:
            return FastTokenizer(checkpoint)
        except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception for a malformed file
            raise ModelLoadError(f"{checkpoint} has no usable tokenizer files ({err})") from None
    from transformers import AutoTokenizer, RobertaTokenizerFast

    try:
        if (checkpoint / "tokenizer_config.json").is_file() or (checkpoint / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(str(checkpoint), trust_remote_code=False)
        # Hub BridgeTower repos ship a bare RoBERTa vocab.json + merges.txt.
        return RobertaTokenizerFast.from_pretrained(str(checkpoint))
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"{checkpoint} has no usable tokenizer files ({err})") from None
