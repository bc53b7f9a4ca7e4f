"""The text tower for cosine search, built from torch modules alone: no transformers import (seconds per cold query).

A text-only engine (`load_engine(text_only=True)`) needs the RoBERTa text model of BridgeTower, the ITC text head
and the tokenizer. When the checkpoint allows it (safetensors weights, a tokenizer.json, a config this module
reads in full), they are built here: the modules below hold the same parameters under the same names as
`BridgeTowerTextModel` and `BridgeTowerContrastiveHead`, and compute what they compute (RoBERTa position ids
from the padding index, post-LayerNorm BERT layers, exact-erf GELU), so the same loader fills them. The tokenizer
is the checkpoint's tokenizer.json through `tokenizers`, called as transformers' fast tokenizer calls it. Any
other checkpoint is loaded through transformers as before (loading.py). The tests hold the embeddings to
`BridgeTowerForContrastiveLearning`'s at fp32, 1e-4, and the token ids to `AutoTokenizer`'s exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

# BridgeTowerTextConfig's and BridgeTowerConfig's defaults (transformers 5), for keys a config.json leaves out.
TEXT_DEFAULTS = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-05,
    "pad_token_id": 1,
    "is_decoder": False,
    "add_cross_attention": False,
}
MODEL_DEFAULTS = {"hidden_size": 768, "num_hidden_layers": 6, "contrastive_hidden_size": 512}
VISION_IMAGE_SIZE_DEFAULT = 288
ACTIVATIONS = {"gelu": nn.functional.gelu}  # transformers' "gelu" is the exact (erf) GELU
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int


@dataclass(frozen=True)
class LightConfig:
    """What the text-only engine and the loader read of a BridgeTowerConfig."""

    hidden_size: int
    num_hidden_layers: int  # cross-modal layers (the engine's split; unused by cosine search)
    contrastive_hidden_size: int
    image_size: int  # vision_config.image_size (the preprocessing's crop)
    text_config: TextConfig


def light_config(checkpoint: Path) -> LightConfig | None:
    """The config, read as BridgeTowerConfig would read it, or None where this module cannot promise the same
    model (an unknown activation, a decoder text model, a config transformers would read differently)."""
    try:
        raw = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("model_type") != "bridgetower":
        return None
    text = raw.get("text_config") or {}
    vision = raw.get("vision_config") or {}
    if not isinstance(text, dict) or not isinstance(vision, dict) or "text_config_dict" in raw:
        return None
    merged = {**TEXT_DEFAULTS, **text}
    if merged["hidden_act"] not in ACTIVATIONS or merged["is_decoder"] or merged["add_cross_attention"]:
        return None
    if merged["hidden_size"] % merged["num_attention_heads"]:
        return None
    try:
        text_config = TextConfig(**{name: merged[name] for name in TextConfig.__dataclass_fields__})
        return LightConfig(
            hidden_size=int(raw.get("hidden_size", MODEL_DEFAULTS["hidden_size"])),
            num_hidden_layers=int(raw.get("num_hidden_layers", MODEL_DEFAULTS["num_hidden_layers"])),
            contrastive_hidden_size=int(raw.get("contrastive_hidden_size", MODEL_DEFAULTS["contrastive_hidden_size"])),
            image_size=int(vision.get("image_size", VISION_IMAGE_SIZE_DEFAULT)),
            text_config=text_config,
        )
    except (TypeError, ValueError):
        return None


class _Linear(nn.Linear):
    def reset_parameters(self) -> None:
        """Nothing: every parameter is read from the checkpoint. (An initialisation on the meta device runs
        torch's Python reference kernels, which import torch._dynamo: a second per cold query.)"""


class _Embedding(nn.Embedding):
    reset_parameters = _Linear.reset_parameters


class _LayerNorm(nn.LayerNorm):
    reset_parameters = _Linear.reset_parameters


class TextEmbeddings(nn.Module):
    """BridgeTowerTextEmbeddings: word + token type 0 + RoBERTa positions (counted from the padding index past
    padding, so a padded query gets the positions it gets alone), then LayerNorm."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = _Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = _Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = _Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = _LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids.ne(self.padding_idx).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + self.padding_idx
        hidden = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(hidden + self.position_embeddings(positions))


class _SelfAttention(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.query = _Linear(config.hidden_size, config.hidden_size)
        self.key = _Linear(config.hidden_size, config.hidden_size)
        self.value = _Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, _ = hidden.shape
        shape = (batch, length, self.num_attention_heads, self.attention_head_size)
        query, key, value = (proj(hidden).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
        # transformers' eager attention, which BridgeTowerModel runs: the same products in the same order, so a
        # text-only engine and a full one (a server) give the same bits, not merely the same numbers to 1e-6.
        scores = torch.matmul(query, key.transpose(2, 3)) * self.scaling
        if mask is not None:
            scores = scores + mask
        out = torch.matmul(nn.functional.softmax(scores, dim=-1), value)
        return out.transpose(1, 2).reshape(batch, length, -1)


class _DenseNorm(nn.Module):
    """dense, then LayerNorm of the sum with the residual (BridgeTowerSelfOutput / BridgeTowerOutput)."""

    def __init__(self, inputs: int, config: TextConfig):
        super().__init__()
        self.dense = _Linear(inputs, config.hidden_size)
        self.LayerNorm = _LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class _Attention(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.self = _SelfAttention(config)
        self.output = _DenseNorm(config.hidden_size, config)


class _Intermediate(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.dense = _Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden))


class TextLayer(nn.Module):
    """BridgeTowerTextLayer (an encoder layer: self-attention, then the feed-forward block)."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.attention = _Attention(config)
        self.intermediate = _Intermediate(config)
        self.output = _DenseNorm(config.intermediate_size, config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.attention.output(self.attention.self(hidden, mask), hidden)
        return self.output(self.intermediate(attended), attended)


class _Encoder(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.layer = nn.ModuleList(TextLayer(config) for _ in range(config.num_hidden_layers))


class TextModel(nn.Module):
    """BridgeTowerTextModel without its pooler: `embeddings`, `encoder.layer`, and the mask its layers take."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.embeddings = TextEmbeddings(config)
        self.encoder = _Encoder(config)

    def attention_mask(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """The additive mask eager attention adds to the scores ([B, 1, 1, L]: 0 where a key may be attended to,
        the dtype's minimum on padding), as transformers builds it; None when nothing is padding."""
        if bool(attention_mask.all()):
            return None
        dtype = self.embeddings.word_embeddings.weight.dtype
        keep = attention_mask.bool()[:, None, None, :]
        zeros = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
        return zeros.masked_fill(~keep, torch.finfo(dtype).min)


class ContrastiveHead(nn.Module):
    """BridgeTowerContrastiveHead: one linear layer, `fc`."""

    def __init__(self, hidden_size: int, embed_size: int):
        super().__init__()
        self.fc = _Linear(hidden_size, embed_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc(hidden)


def light_tokenizer_possible(checkpoint: Path) -> bool:
    """Whether `FastTokenizer` reads this checkpoint's tokenizer as transformers would: a tokenizer.json, and no
    tokenizer_config setting that transformers applies on top of it (prefix space, left padding, lower case)."""
    if not (checkpoint / TOKENIZER_FILE).is_file():
        return False
    settings = _tokenizer_settings(checkpoint)
    if settings is None:
        return False
    return (
        settings.get("tokenizer_class") in (None, "RobertaTokenizer", "RobertaTokenizerFast")
        and not settings.get("add_prefix_space", False)
        and settings.get("padding_side", "right") == "right"
        and not settings.get("do_lower_case", False)
    )


def _tokenizer_settings(checkpoint: Path) -> dict[str, Any] | None:
    path = checkpoint / TOKENIZER_CONFIG
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return settings if isinstance(settings, dict) else None


class FastTokenizer:
    """A checkpoint's tokenizer.json through `tokenizers`, called like transformers' fast tokenizer:
    special tokens added, padding on the right to the longest text, truncation only when asked."""

    def __init__(self, checkpoint: Path):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(checkpoint / TOKENIZER_FILE))
        pad_token = _tokenizer_settings(checkpoint).get("pad_token", "<pad>")
        pad_token = pad_token.get("content", "<pad>") if isinstance(pad_token, dict) else pad_token
        pad_id = self.backend.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"the pad token {pad_token!r} is not in {checkpoint / TOKENIZER_FILE}")
        self.pad_token, self.pad_id = pad_token, pad_id

    def __call__(
        self,
        texts: list[str],
        padding: bool = True,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str = "pt",
        verbose: bool = True,
    ) -> dict[str, torch.Tensor]:
        backend = self.backend
        backend.no_padding()
        backend.no_truncation()
        if truncation and max_length is not None:
            backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction="right")
        if padding:
            backend.enable_padding(direction="right", pad_id=self.pad_id, pad_token=self.pad_token)
        encodings = backend.encode_batch(list(texts), add_special_tokens=True)
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
        }
