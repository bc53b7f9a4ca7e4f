"""The fusion layers' attention maps, for explanations (search/explain.py).

`fusion_attention` runs the cross-modal encoder over the same inputs the rerank reads (`text_states` once per
query, `vision_states` per image, both as `itm_scores` takes them), in the plain eager form whose attention
probabilities are the ones `BridgeTowerForImageAndTextRetrieval` computes in its attention modules (a test holds
them to the reference at 1e-4). Every layer runs in full (the rerank's last layer computes its CLS rows alone),
so every token's row is there. With `gradients`, it also returns the gradient of the ITM log-odds of a match
with respect to every attention map (Chefer et al. 2021), by one backward pass through the fusion layers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from bt_search.engine.model import BridgeTowerEngine, TextStates


@dataclass
class FusionAttention:
    """Head-wise attention probabilities per cross-modal layer, and the ITM logits, for K (text, image) pairs.

    Each list has one float32 tensor per layer: text_self [K, H, T, T], text_cross [K, H, T, I] (text tokens over
    image tokens, the image CLS first), image_self [K, H, I, I], image_cross [K, H, I, T]. `gradients` (or None)
    holds d(log-odds of a match)/d(map) in the same layout, keyed by the same names."""

    text_self: list[torch.Tensor]
    text_cross: list[torch.Tensor]
    image_self: list[torch.Tensor]
    image_cross: list[torch.Tensor]
    logits: torch.Tensor  # [K, 2]
    gradients: dict[str, list[torch.Tensor]] | None = None

    KINDS = ("text_self", "text_cross", "image_self", "image_cross")


def fusion_attention(
    engine: BridgeTowerEngine, text: TextStates, images: torch.Tensor, *, gradients: bool = False
) -> FusionAttention:
    """The attention maps of one query against K images' states [K, ...] (see the module's docstring)."""
    if engine.heads.itm is None:
        from bt_search.errors import MissingHeadError

        raise MissingHeadError(f"{engine.model_id} has no ITM head, so there is no match to explain")
    # The rerank's precision (bf16 autocast), except int8: its quantized products are for the rerank alone, and the
    # maps are computed over the full-precision weights then.
    quantized = engine.rerank_dtype == torch.int8
    precision = contextlib.nullcontext() if quantized else engine._rerank_precision()
    with torch.inference_mode(False), torch.set_grad_enabled(gradients), precision:
        # Outside inference mode: the cached states are inference tensors, which autograd cannot record; a copy is not.
        text_streams = text.streams.clone().unsqueeze(0).expand(images.shape[0], -1, -1, -1)
        image_streams = images.clone()
        if gradients:
            text_streams.requires_grad_(True)  # puts the whole fusion in the graph (the weights may not ask for it)
        ones = torch.ones(text_streams.shape[:1] + text_streams.shape[2:3], dtype=torch.long, device=engine.device)
        mask = engine._text_mask(text_streams[:, 0], ones)
        maps = {kind: [] for kind in FusionAttention.KINDS}
        pooled = _fuse(engine.backbone, engine.num_cross_layers, text_streams, image_streams, mask, maps)
        logits = engine.heads.itm(pooled).float()
        grads = None
        if gradients:
            log_odds = (logits[:, 1] - logits[:, 0]).sum()  # pairs are independent: one backward serves all K
            flat = [m for kind in FusionAttention.KINDS for m in maps[kind]]
            found = torch.autograd.grad(log_odds, flat, allow_unused=True)
            found = [torch.zeros_like(m) if g is None else g for m, g in zip(flat, found)]
            layers = engine.num_cross_layers
            grads = {
                kind: [g.detach().float() for g in found[n * layers : (n + 1) * layers]]
                for n, kind in enumerate(FusionAttention.KINDS)
            }
        detached = {kind: [m.detach().float() for m in maps[kind]] for kind in FusionAttention.KINDS}
        return FusionAttention(**detached, logits=logits.detach(), gradients=grads)


def _fuse(bb: nn.Module, layers: int, text_streams, image_streams, mask, maps: dict) -> torch.Tensor:
    """BridgeTowerModel.forward's cross-modal encoder and poolers, every layer in full, recording attention."""
    text_in, image_in = text_streams[:, 0], image_streams[:, 0]
    text_out = image_out = None
    for layer in range(layers):
        if layer > 0:
            text_in = bb.cross_modal_text_link_tower[layer - 1](text_streams[:, layer], text_out, mask)
            image_in = bb.cross_modal_image_link_tower[layer - 1](image_streams[:, layer], image_out, None)
        text_out = _cross_layer(bb.cross_modal_text_layers[layer], text_in, image_in, mask, None, maps, "text")
        image_out = _cross_layer(bb.cross_modal_image_layers[layer], image_in, text_in, None, mask, maps, "image")
    return bb.get_cls_features(text_out, image_out)


def _cross_layer(layer: nn.Module, hidden, other, self_mask, cross_mask, maps: dict, stream: str) -> torch.Tensor:
    """`BridgeTowerBertCrossLayer.forward`: self-attention, cross-attention over `other`, feed-forward."""
    hidden = _attention(layer.attention, hidden, hidden, self_mask, maps[f"{stream}_self"])
    hidden = _attention(layer.crossattention, hidden, other, cross_mask, maps[f"{stream}_cross"])
    return layer.output(layer.intermediate(hidden), hidden)


def _attention(block: nn.Module, rows: torch.Tensor, keys: torch.Tensor, mask, record: list) -> torch.Tensor:
    """`BridgeTowerAttention` in eager form (transformers' eager_attention_forward), its probabilities recorded."""
    attn = block.self
    batch, heads, size = rows.shape[0], attn.num_attention_heads, attn.attention_head_size
    query = attn.query(rows).view(batch, -1, heads, size).transpose(1, 2)
    key = attn.key(keys).view(batch, -1, heads, size).transpose(1, 2)
    value = attn.value(keys).view(batch, -1, heads, size).transpose(1, 2)
    scores = torch.matmul(query, key.transpose(2, 3)).float() * attn.scaling
    if mask is not None:
        scores = scores + mask.float()
    probs = torch.softmax(scores, dim=-1)
    record.append(probs)
    mixed = torch.matmul(probs.to(value.dtype), value).transpose(1, 2).reshape(batch, rows.shape[1], heads * size)
    return block.output(mixed, rows)
