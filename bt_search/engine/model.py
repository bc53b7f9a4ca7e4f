"""One BridgeTower checkpoint, one backbone in memory, three fast paths.

- `encode_images`: the vision tower alone -> L2-normalised ITC image embeddings.
- `encode_texts`: the text tower alone -> L2-normalised ITC text embeddings.
- `text_states` / `vision_states` / `itm_scores`: the unimodal top-layer states each modality feeds the
  cross-modal encoder, computed once per query and once per image; per pair only the bridge (link) and
  cross-modal layers run, then the ITM head.

Every path computes what `BridgeTowerModel.forward` in transformers computes, with the same weights (the
vision blocks regroup the same math into fewer memory passes); the tests hold them to the HF classes' numbers.
The rerank paths (`vision_states`, `itm_scores`) may run in a lower `rerank_dtype` than the embeddings, over
the same weights (see loading.resolve_dtypes).
Loading lives in `loading.py`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from bt_search.engine.weights import embedding_fingerprint
from bt_search.media.images import Preprocessing

QUICK_GELU_SCALE = 1.702  # transformers' QuickGELUActivation: x * sigmoid(1.702 x)


class TruncatedQueryWarning(UserWarning):
    """A query was longer than the model's maximum text length and was cut."""


@dataclass
class TextStates:
    """One query's inputs to the cross-modal encoder: layer 0's stream, then each link layer's text input."""

    text: str
    streams: torch.Tensor  # [num_cross_layers, tokens, hidden]


class Product(NamedTuple):
    """A matrix product the rerank runs by the model's weights, `alpha * x @ weight.T + beta * bias`; `weight` and
    `bias` are parameters, or (key, value) pairs that the code concatenates first. The int8 rerank builds a copy of
    each up front (quantized.Int8Products.prepare)."""

    weight: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
    bias: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None
    alpha: float = 1.0
    beta: float = 1.0


@dataclass
class Heads:
    itc_text: nn.Module
    itc_image: nn.Module | None  # None when only the text tower was loaded
    itm: nn.Module | None  # None when the checkpoint ships no ITM head, or only the text tower was loaded

    def to(self, device: torch.device) -> Heads:
        for head in (self.itc_text, self.itc_image, self.itm):
            if head is not None:
                head.to(device)
        return self


class BridgeTowerEngine:
    """Encoders and rerank scoring over a shared `BridgeTowerModel` backbone."""

    def __init__(
        self,
        backbone: nn.Module,
        heads: Heads,
        tokenizer,
        preprocessing: Preprocessing,
        *,
        model_id: str,
        revision: str | None,
        device: torch.device,
        dtype: torch.dtype,
        max_text_len: int,
        rerank_dtype: torch.dtype | None = None,
    ):
        self.backbone = backbone.eval()
        self.heads = heads
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing
        self.model_id = model_id
        self.revision = revision
        self.device = device
        self.dtype = dtype
        self.rerank_dtype = rerank_dtype or dtype
        self.max_text_len = max_text_len
        self.config = backbone.config
        num_text_layers = len(backbone.text_model.encoder.layer)
        self.num_cross_layers = self.config.num_hidden_layers
        self.num_text_layers = num_text_layers
        # As in BridgeTowerModel.forward: the first `split` unimodal layers run before the cross-modal encoder.
        self.split = num_text_layers - self.num_cross_layers + 1

    # ---------------------------------------------------------------- facts
    @property
    def embedding_dim(self) -> int:
        return self.heads.itc_text.fc.out_features

    @property
    def has_vision(self) -> bool:
        return self.heads.itc_image is not None

    @property
    def has_itm(self) -> bool:
        return self.heads.itm is not None

    def embedding_fingerprint(self) -> str:
        """A short hash of the ITC text head's weights: equal for copies of one checkpoint, differs across models.

        The text head alone, so a text-only engine (cosine search) computes the same fingerprint as a full one.
        """
        return embedding_fingerprint(
            t.detach().float().cpu().numpy() for t in self.heads.itc_text.state_dict().values()
        )

    # ---------------------------------------------------------------- vision tower
    @torch.inference_mode()
    def encode_images(self, pixel_values: np.ndarray | torch.Tensor) -> np.ndarray:
        """[B, 3, H, W] preprocessed pixels, or [B, H, W, 3] uint8 crops -> [B, D] float32 unit ITC embeddings."""
        blocks = self._vision_blocks(pixel_values, last_cls_only=True)
        return self._itc_image(blocks[-1])

    @torch.inference_mode()
    def vision_states(self, pixel_values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] (or uint8 crops) -> [B, num_cross_layers, tokens, hidden]: what the fusion layers read."""
        with self._rerank_precision("vision", lambda: _vision_products(self)):
            blocks = self._vision_blocks(pixel_values)
            return self._image_streams(blocks[self.split - 1 :])

    def _rerank_precision(self, plan: Hashable = None, products: Callable[[], Iterable[Product]] | None = None):
        """Rerank's products in `rerank_dtype` over the one set of weights (fp32 when the embeddings are).

        Autocast casts each weight as a product reads it, without keeping the casts (cache_enabled=False), so no
        second copy of the backbone is ever held. int8 runs the products by int8 copies of the weights, built
        in parallel the first time `plan` runs, from the list of `products` it runs.
        """
        if self.rerank_dtype == self.dtype:
            return contextlib.nullcontext()
        if self.rerank_dtype == torch.int8:  # int8 products over int8 copies of the weights (quantized.py)
            from bt_search.engine.quantized import rerank_products

            int8 = rerank_products(self)
            if products is not None:
                int8.prepare(plan, products)
            return int8.active()
        return torch.autocast(self.device.type, dtype=self.rerank_dtype, cache_enabled=False)

    def _vision_blocks(
        self, pixel_values: np.ndarray | torch.Tensor, last_cls_only: bool = False
    ) -> list[torch.Tensor]:
        """Outputs (batch-first, [B, L, D]) of the vision blocks that BridgeTowerModel uses: as many as text layers.

        With `last_cls_only`, the last block computes its output for the CLS token alone (all ITC reads).
        """
        if not self.has_vision:
            raise RuntimeError("this engine was loaded with text_only=True; load it in full to encode images")
        visual = self.backbone.vision_model.visual
        pixels = self._pixels_on_device(pixel_values)
        hidden = visual.forward_pre(pixels).transpose(0, 1)  # forward_pre hands over sequence-first
        blocks = visual.transformer.resblocks[: self.num_text_layers]
        outputs = []
        for position, block in enumerate(blocks):
            last = position == len(blocks) - 1
            hidden = _vision_block(block, hidden, cls_only=last and last_cls_only)
            outputs.append(hidden)
        return outputs

    def _pixels_on_device(self, pixel_values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised pixels in the engine's dtype. uint8 crops cross to the device as bytes (4x less to copy)
        and get `images.normalize`'s arithmetic there: rescale in float64, normalise in float32."""
        pixels = torch.as_tensor(pixel_values).to(self.device)
        if pixels.dtype != torch.uint8:
            return pixels.to(self.dtype)
        prep = self.preprocessing
        scaled = (pixels.to(torch.float64) * prep.rescale_factor).to(torch.float32)
        mean = torch.tensor(prep.mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(prep.std, dtype=torch.float32, device=self.device)
        return ((scaled - mean) / std).permute(0, 3, 1, 2).to(self.dtype)

    def _image_token_type(self) -> torch.Tensor:
        return self.backbone.token_type_embeddings.weight[1]

    def _itc_image(self, last_block: torch.Tensor) -> np.ndarray:
        visual = self.backbone.vision_model.visual
        cls = visual.ln_post(last_block[:, 0])  # forward_post minus its permute: blocks are batch-first
        projected = self.backbone._apply_image_transform(cls, 0) + self._image_token_type()
        return _normalized(self.heads.itc_image(projected))

    def _image_streams(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        visual = self.backbone.vision_model.visual
        token_type = self._image_token_type()
        streams = [
            self.backbone._apply_image_transform(visual.ln_post(b), i) + token_type for i, b in enumerate(blocks)
        ]
        streams[0] = self.backbone.cross_modal_image_layernorm(streams[0])
        return torch.stack(streams, dim=1)

    # ---------------------------------------------------------------- text tower
    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> [B, D] float32 ITC embeddings (unit norm). Padded batches give the same rows as singles."""
        input_ids, attention_mask = self._tokenize(texts)
        layers = self._text_layers(input_ids, attention_mask)
        return _normalized(self.heads.itc_text(layers[-1][:, 0]))

    @torch.inference_mode()
    def text_states(self, text: str) -> TextStates:
        """One query's fusion inputs, computed once and reused for every candidate image."""
        input_ids, attention_mask = self._tokenize([text])
        layers = self._text_layers(input_ids, attention_mask)[self.split - 1 :]
        token_type = self.backbone.token_type_embeddings.weight[0]
        streams = [self.backbone._apply_text_transform(t, i) + token_type for i, t in enumerate(layers)]
        streams[0] = self.backbone.cross_modal_text_layernorm(streams[0])
        return TextStates(text=text, streams=torch.stack(streams, dim=1)[0])

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        # verbose=False: our own TruncatedQueryWarning (one line per query) replaces transformers' log line.
        encoded = self.tokenizer(texts, padding=True, truncation=False, return_tensors="pt", verbose=False)
        input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
        if input_ids.shape[1] > self.max_text_len:
            input_ids, attention_mask = self._truncate(texts, input_ids, attention_mask)
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _truncate(self, texts, input_ids, attention_mask):
        lengths = attention_mask.sum(dim=1).tolist()
        for text, length in zip(texts, lengths):
            if length > self.max_text_len:
                preview = text if len(text) <= 60 else text[:57] + "..."
                warnings.warn(
                    f"query truncated from {length} to {self.max_text_len} tokens: {preview!r}",
                    TruncatedQueryWarning,
                    stacklevel=4,
                )
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_text_len, return_tensors="pt"
        )
        return encoded["input_ids"], encoded["attention_mask"]

    def _text_layers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        text_model = self.backbone.text_model
        hidden = text_model.embeddings(input_ids=input_ids)
        mask = self._text_mask(hidden, attention_mask)
        outputs = []
        for layer in text_model.encoder.layer:
            hidden = layer(hidden, mask)
            outputs.append(hidden)
        return outputs

    def _text_mask(self, text_hidden: torch.Tensor, attention_mask: torch.Tensor):
        light_mask = getattr(self.backbone.text_model, "attention_mask", None)
        if light_mask is not None:  # the torch-only text tower (text_tower.py) builds its own
            return light_mask(attention_mask)
        from transformers.masking_utils import create_bidirectional_mask  # imported with the HF modules anyway

        # Built exactly as BridgeTowerModel.forward builds it, so the attention kernels see the same mask.
        return create_bidirectional_mask(
            config=self.config, inputs_embeds=text_hidden[:, 0:1, :], attention_mask=attention_mask
        )

    # ---------------------------------------------------------------- fusion + ITM
    @torch.inference_mode()
    def itm_scores(self, text: TextStates, images: torch.Tensor) -> np.ndarray:
        """Match probabilities `softmax(ITM logits)[:, 1]` of one query against K images' states [K, ...]."""
        if self.heads.itm is None:
            from bt_search.errors import MissingHeadError

            raise MissingHeadError(
                f"{self.model_id} has no ITM head, so results cannot be reranked; set `rerank=False`, or use a "
                "checkpoint with the ITM head such as BridgeTower/bridgetower-large-itm-mlm-itc"
            )
        count = images.shape[0]
        text_streams = text.streams.unsqueeze(0).expand(count, -1, -1, -1)
        ones = torch.ones(text_streams.shape[:1] + text_streams.shape[2:3], dtype=torch.long, device=self.device)
        mask = self._text_mask(text_streams[:, 0], ones)
        lengths = text.streams.shape[1], images.shape[2]  # which products _fuse runs depends on them
        with self._rerank_precision(("itm", *lengths), lambda: _itm_products(self, *lengths)):
            pooled = self._fuse(text_streams, images, mask)
            logits = self.heads.itm(pooled).float()
        return torch.softmax(logits, dim=-1)[:, 1].cpu().numpy()

    def _fuse(self, text_streams: torch.Tensor, image_streams: torch.Tensor, mask) -> torch.Tensor:
        """The cross-modal encoder as BridgeTowerModel.forward runs it, then the poolers. The last layer computes
        its CLS rows alone: the poolers, and so the ITM head, read nothing else."""
        bb = self.backbone
        last = self.num_cross_layers - 1
        # contiguous: given a strided or broadcast batch, a linear layer copies its weight once per batch row
        text_in, image_in = text_streams[:, 0].contiguous(), image_streams[:, 0].contiguous()
        for layer in range(self.num_cross_layers):
            if layer > 0:
                text_in = bb.cross_modal_text_link_tower[layer - 1](text_streams[:, layer], text_out, mask)  # noqa: F821 - bound by layer 0
                image_in = bb.cross_modal_image_link_tower[layer - 1](image_streams[:, layer], image_out, None)  # noqa: F821
            cls_only = layer == last
            text_out = _cross_layer(bb.cross_modal_text_layers[layer], text_in, image_in, mask, None, cls_only)
            image_out = _cross_layer(bb.cross_modal_image_layers[layer], image_in, text_in, None, mask, cls_only)
        return bb.get_cls_features(text_out, image_out)


def _cross_layer(layer: nn.Module, hidden: torch.Tensor, other: torch.Tensor, self_mask, cross_mask, cls_only: bool):
    """`BridgeTowerBertCrossLayer.forward` (eager attention, which never applies its `is_causal` flag).

    With `cls_only` the output is the CLS row alone ([B, 1, D]): keys and values still come from every token.
    """
    rows = hidden[:, :1].contiguous() if cls_only else hidden  # contiguous: see _fuse
    hidden = _attention_block(layer.attention, rows, hidden, self_mask)
    hidden = _attention_block(layer.crossattention, hidden, other, cross_mask)
    return layer.output(layer.intermediate(hidden), hidden)


def _attention_block(block: nn.Module, rows: torch.Tensor, keys: torch.Tensor, mask) -> torch.Tensor:
    """`BridgeTowerAttention` (attention, then dense + residual + LayerNorm) of `rows` over `keys`, in whichever
    association of the same products is cheapest for the two lengths. Text queries are ~10 tokens and
    images 325, so text-over-image attention projects far fewer rows with the projections moved to the
    query side, and image-over-text attention does with them moved to the key side (fp32 results agree with
    the plain order to ~1e-6; tests/unit/engine/test_towers_match_reference.py holds them to the HF classes)."""
    attn = block.self
    association = _association(rows.shape[1], keys.shape[1], rows.shape[-1], attn.num_attention_heads)
    if association == "few_query":
        return block.output(_few_query_attention(attn, rows, keys, mask), rows)
    if association == "few_key":
        return _few_key_attention_block(block, rows, keys, mask)
    return block.output(_bert_attention(attn, rows, keys, mask), rows)


def _association(queries: int, length: int, width: int, heads: int) -> str:
    """The cheapest association of `_attention_block` for `queries` rows over `length` keys."""
    if queries * (width + heads * length) < length * width:
        return "few_query"
    if length * (width + queries * heads) < queries * (width + length):
        return "few_key"
    return "plain"


def _bert_attention(attn: nn.Module, queries: torch.Tensor, keys: torch.Tensor, mask) -> torch.Tensor:
    """BERT-style attention of `queries` rows over `keys` rows, with the module's weights; `mask` is the additive
    [B, 1, 1, L] mask (or None) that eager attention adds to the scores, so SDPA computes the same thing."""
    batch, heads = queries.shape[0], attn.num_attention_heads
    query = attn.query(queries).view(batch, -1, heads, attn.attention_head_size).transpose(1, 2)
    weight = torch.cat([attn.key.weight, attn.value.weight])
    bias = torch.cat([attn.key.bias, attn.value.bias])
    key, value = nn.functional.linear(keys, weight, bias).view(batch, -1, 2, heads, attn.attention_head_size).unbind(2)
    out = nn.functional.scaled_dot_product_attention(
        query, key.transpose(1, 2), value.transpose(1, 2), attn_mask=mask, scale=attn.scaling
    )
    return out.transpose(1, 2).reshape(batch, queries.shape[1], -1)


def _few_query_attention(attn: nn.Module, queries: torch.Tensor, keys: torch.Tensor, mask) -> torch.Tensor:
    """`_bert_attention` for few queries over many keys, without projecting the keys:
    q . (W_k x + b_k) = (W_k^T q) . x + q . b_k, and sum_j p_j (W_v x_j + b_v) = W_v (sum_j p_j x_j) + b_v
    (each row of p sums to 1). Per head: Q rows x D products instead of two D x D projections of every key."""
    batch, rows, width = queries.shape
    heads, size = attn.num_attention_heads, attn.attention_head_size
    query = attn.query(queries).view(batch * rows, heads, size).transpose(0, 1)  # [H, B*Q, d]
    folded = torch.bmm(query, attn.key.weight.view(heads, size, width))  # [H, B*Q, D]
    offset = torch.bmm(query, attn.key.bias.view(heads, size, 1))  # [H, B*Q, 1]
    folded = folded.view(heads, batch, rows, width).transpose(0, 1).reshape(batch, heads * rows, width)
    scores = torch.bmm(folded, keys.transpose(1, 2)).view(batch, heads, rows, -1)
    scores = (scores + offset.view(heads, batch, rows, 1).transpose(0, 1)) * attn.scaling
    probs = _softmax(scores, mask, queries.dtype)  # [B, H, Q, K]
    mixed = torch.bmm(probs.view(batch, heads * rows, -1), keys).view(batch, heads, rows, width)
    mixed = mixed.transpose(0, 1).reshape(heads, batch * rows, width)
    value = attn.value.weight.view(heads, size, width).transpose(1, 2)  # [H, D, d]
    out = torch.baddbmm(attn.value.bias.view(heads, 1, size), mixed, value)  # [H, B*Q, d]
    return out.view(heads, batch, rows, size).permute(1, 2, 0, 3).reshape(batch, rows, heads * size)


def _few_key_attention_block(block: nn.Module, rows: torch.Tensor, keys: torch.Tensor, mask) -> torch.Tensor:
    """`BridgeTowerAttention` for many rows over few keys, without projecting the rows: per head,
    (W_q x + b_q) . k = x . (W_q^T k) + b_q . k, and the output dense folds into the values,
    W_o[:, h] (sum_j p_j v_j) = sum_j p_j (W_o[:, h] v_j). Per row: H x K products instead of two D x D."""
    attn, output = block.self, block.output
    batch, count, width = rows.shape
    heads, size = attn.num_attention_heads, attn.attention_head_size
    length = keys.shape[1]
    weight = torch.cat([attn.key.weight, attn.value.weight])
    bias = torch.cat([attn.key.bias, attn.value.bias])
    projected = nn.functional.linear(keys, weight, bias).view(batch * length, 2, heads, size)
    key, value = projected.permute(1, 2, 0, 3)  # each [H, B*K, d]
    folded = torch.bmm(key, attn.query.weight.view(heads, size, width))  # [H, B*K, D]
    offset = torch.bmm(key, attn.query.bias.view(heads, size, 1))  # [H, B*K, 1]
    folded = folded.view(heads, batch, length, width).transpose(0, 1).reshape(batch, heads * length, width)
    scores = torch.bmm(rows, folded.transpose(1, 2)).view(batch, count, heads, length)
    scores = (scores + offset.view(heads, batch, length).transpose(0, 1).unsqueeze(1)) * attn.scaling
    probs = _softmax(scores, mask, rows.dtype)  # [B, N, H, K]; mask [B, 1, 1, K] broadcasts over rows and heads
    dense = output.dense.weight.view(width, heads, size).permute(1, 2, 0)  # [H, d, D]
    mixed = torch.bmm(value, dense).view(heads, batch, length, width).transpose(0, 1)  # [B, H, K, D]
    mixed = mixed.reshape(batch, heads * length, width)
    attended = torch.baddbmm(output.dense.bias, probs.reshape(batch, count, heads * length), mixed)
    return output.LayerNorm(attended + rows)


def _softmax(scores: torch.Tensor, mask, dtype: torch.dtype) -> torch.Tensor:
    """Softmax over the last axis in float32 (as SDPA accumulates), after eager's additive mask."""
    scores = scores.float()
    if mask is not None:
        scores = scores + mask.float()
    return torch.softmax(scores, dim=-1).to(dtype)


def _vision_block(block: nn.Module, hidden: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
    """`BridgeTowerResidualAttention.forward` on batch-first [B, L, D]: the same math in fewer memory passes.

    With `cls_only` the output is the CLS row alone ([B, 1, D]): keys and values still come from every
    token, but the query, attention output, out-projection and MLP (two thirds of the FLOPs) run for one row.
    """
    normed = block.ln_1(hidden)
    residual = (hidden[:, :1] if cls_only else hidden) + _attention(block.attn, normed, cls_only)
    return residual + _mlp(block.mlp, block.ln_2(residual))


def _attention(attn: nn.MultiheadAttention, normed: torch.Tensor, cls_only: bool) -> torch.Tensor:
    """Unmasked self-attention with nn.MultiheadAttention's weights, on strided views of one QKV product
    (the module itself wants sequence-first input and copies q, k and v apart)."""
    batch, length, width = normed.shape
    heads = attn.num_heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    if cls_only:
        query = nn.functional.linear(normed[:, :1], weight[:width], bias[:width]).view(batch, 1, heads, -1)
        key, value = (
            nn.functional.linear(normed, weight[width:], bias[width:]).view(batch, length, 2, heads, -1).unbind(2)
        )
    else:
        query, key, value = nn.functional.linear(normed, weight, bias).view(batch, length, 3, heads, -1).unbind(2)
    attended = nn.functional.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    )
    return attn.out_proj(attended.transpose(1, 2).reshape(batch, query.shape[1], width))


def _mlp(mlp: nn.ModuleDict, hidden: torch.Tensor) -> torch.Tensor:
    """c_fc -> QuickGELU -> c_proj. QuickGELU(x) = x * sigmoid(1.702 x) = silu(1.702 x) / 1.702, so the two
    scales ride in the matrix products (addmm's alpha/beta) and the activation is one in-place SiLU pass
    instead of three passes over the 4x-wide tensor (a sixth of the tower's CPU time)."""
    fc, activation, proj = mlp["c_fc"], mlp["gelu"], mlp["c_proj"]
    if not _quick_gelu(activation):
        return proj(activation(fc(hidden)))
    (fc_alpha, fc_beta), (proj_alpha, proj_beta) = mlp_scales(mlp)
    flat = hidden.reshape(-1, hidden.shape[-1])
    inner = torch.addmm(fc.bias, flat, fc.weight.t(), beta=fc_beta, alpha=fc_alpha)
    nn.functional.silu(inner, inplace=True)
    out = torch.addmm(proj.bias, inner, proj.weight.t(), beta=proj_beta, alpha=proj_alpha)
    return out.view(*hidden.shape[:-1], -1)


def mlp_scales(mlp: nn.ModuleDict) -> tuple[tuple[float, float], tuple[float, float]]:
    """The (alpha, beta) by which `_mlp` multiplies c_fc's and c_proj's products (`alpha * x W^T + beta * b`):
    QuickGELU's scale rides in them; (1, 1) each when the activation is another (plain linears)."""
    if not _quick_gelu(mlp["gelu"]):
        return (1.0, 1.0), (1.0, 1.0)
    return (QUICK_GELU_SCALE, QUICK_GELU_SCALE), (1 / QUICK_GELU_SCALE, 1.0)


def _quick_gelu(activation: nn.Module) -> bool:
    from transformers.activations import QuickGELUActivation  # loaded with the vision tower's HF modules

    return isinstance(activation, QuickGELUActivation)


# ---------------------------------------------------------------- the rerank's products, as the paths above run them
def _vision_products(engine: BridgeTowerEngine) -> Iterator[Product]:
    """What `vision_states` multiplies by: per vision block, the QKV projection of every row (`_attention`), the
    out-projection and the MLP's two, with their scales (`_mlp`); then each stream's image transform."""
    bb = engine.backbone
    for block in bb.vision_model.visual.transformer.resblocks[: engine.num_text_layers]:
        yield Product(block.attn.in_proj_weight, block.attn.in_proj_bias)
        yield from _linears(block.attn.out_proj)
        fc_scales, proj_scales = mlp_scales(block.mlp)
        yield Product(block.mlp["c_fc"].weight, block.mlp["c_fc"].bias, *fc_scales)
        yield Product(block.mlp["c_proj"].weight, block.mlp["c_proj"].bias, *proj_scales)
    transform = bb.cross_modal_image_transform
    for layer in range(engine.num_cross_layers):  # _image_streams, as BridgeTowerModel._apply_image_transform picks
        yield from _linears(transform if bb.config.share_cross_modal_transformer_layers else transform[layer])


def _itm_products(engine: BridgeTowerEngine, text_tokens: int, image_tokens: int) -> Iterator[Product]:
    """What `itm_scores` multiplies by for a query of `text_tokens` against images of `image_tokens`: the cross
    layers as `_fuse` runs them (the last for the CLS rows alone), the poolers and the ITM head."""
    bb = engine.backbone
    last = engine.num_cross_layers - 1
    for layer in range(engine.num_cross_layers):
        text, image = bb.cross_modal_text_layers[layer], bb.cross_modal_image_layers[layer]
        yield from _cross_layer_products(text, text_tokens, image_tokens, layer == last)
        yield from _cross_layer_products(image, image_tokens, text_tokens, layer == last)
    for module in (bb.cross_modal_text_pooler, bb.cross_modal_image_pooler, engine.heads.itm):
        yield from _linears(module)


def _cross_layer_products(layer: nn.Module, length: int, other: int, cls_only: bool) -> Iterator[Product]:
    """`_cross_layer`'s products for `length` rows attending to themselves, then to `other` rows."""
    rows = 1 if cls_only else length
    yield from _attention_block_products(layer.attention, rows, length)
    yield from _attention_block_products(layer.crossattention, rows, other)
    yield from _linears(layer.intermediate)
    yield from _linears(layer.output)


def _attention_block_products(block: nn.Module, rows: int, length: int) -> Iterator[Product]:
    """The linear products of `_attention_block` in the association it picks (the others are bmm's over views)."""
    attn = block.self
    association = _association(rows, length, attn.query.in_features, attn.num_attention_heads)
    if association != "few_key":
        yield from _linears(attn.query)
    if association != "few_query":  # one product by the concatenated key and value projections
        yield Product((attn.key.weight, attn.value.weight), (attn.key.bias, attn.value.bias))
    if association != "few_key":
        yield from _linears(block.output)


def _linears(module: nn.Module | None) -> Iterator[Product]:
    """The module's `nn.Linear`s, which the paths above call as modules."""
    if module is not None:
        for child in module.modules():
            if isinstance(child, nn.Linear):
                yield Product(child.weight, child.bias)


def _normalized(embeddings: torch.Tensor) -> np.ndarray:
    return nn.functional.normalize(embeddings.float(), dim=-1, p=2).cpu().numpy()
