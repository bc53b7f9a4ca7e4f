"""The int8 rerank: the rerank's matrix products in int8 where the CPU has no native bf16.

Dynamic quantisation (the products of `torch.ao.quantization.quantize_dynamic`, called directly): each weight
that the rerank multiplies by is quantised once, per output channel, to int8 and prepacked for the CPU's int8
kernels (fbgemm on x86, QNNPACK on ARM); each product quantises its input per call (per tensor, 7-bit so
AVX2's 16-bit pair sums cannot saturate), multiplies in int8 and returns fp32. Everything else (attention
scores, softmax, LayerNorm, activations) stays fp32.

The fp32 weights stay the only fp32 copy: the int8 copies sit beside them (a quarter of their size per copy
that the kernel library keeps; docs/performance.md, "int8 rerank", says what that measured), built on the first
rerank, so an engine that only embeds never pays for them. The model code is unchanged: `Int8Products.active()`
is a torch function mode, like autocast, that routes `linear` and `addmm` over a quantised weight (or its
transpose, or the key/value concatenation the attention builds) to the int8 kernel while it is entered.
Embeddings never run under it, so index and query vectors (and the index's fingerprint) are the fp32 ones.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

INT8 = torch.int8  # the engine's `rerank_dtype` for this path (serve's /health shows "int8")
_TAG = "_bt_int8_packed"  # attribute naming the prepacked int8 copy of a concatenation of quantised weights
_BUILD_LOCK = threading.Lock()


def int8_engine() -> str | None:
    """The quantized engine whose int8 kernels this CPU has (None: none, int8 cannot run here)."""
    supported = torch.backends.quantized.supported_engines
    return next((name for name in ("x86", "fbgemm", "qnnpack") if name in supported), None)


class Int8Products:
    """Prepacked int8 copies of a set of fp32 weights, and the mode that multiplies by them."""

    def __init__(self, weights: Iterable[torch.Tensor], pairs: Iterable[tuple[torch.Tensor, torch.Tensor]] = ()):
        engine = int8_engine()
        if engine is None:
            raise RuntimeError("this torch build has no int8 (quantized) CPU kernels")
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = engine  # prepacked weights keep their kernel library; calls need none
        try:
            self._packed = {id(w): (w, _prepack(w)) for w in weights}
            self._pairs = {(id(a), id(b)): (a, b, _prepack(torch.cat([a, b]))) for a, b in pairs}
        finally:
            torch.backends.quantized.engine = previous
        self.engine = engine
        # int8 values and fp64 scales of one copy (the kernel library may keep the unpacked one too)
        shapes = [w.shape for w, _ in self._packed.values()]
        shapes += [(a.shape[0] + b.shape[0], a.shape[1]) for a, b, _ in self._pairs.values()]
        self.nbytes = sum(rows * (cols + 8) for rows, cols in shapes)

    def __len__(self) -> int:
        return len(self._packed) + len(self._pairs)

    def active(self) -> _Int8Mode:
        """A context in which products by these weights run in int8."""
        return _Int8Mode(self)

    def packed(self, weight: torch.Tensor):
        """The prepacked int8 copy of `weight` [out, in] (None if it has none)."""
        tagged = getattr(weight, _TAG, None)
        if tagged is not None:
            return tagged
        entry = self._packed.get(id(weight))
        return entry[1] if entry is not None and entry[0] is weight else None

    def packed_transpose(self, matrix: torch.Tensor):
        """The int8 copy of W when `matrix` is `W.t()` for a quantised W (the operand addmm reads)."""
        base = matrix._base
        if (
            base is None
            or matrix.dim() != 2
            or matrix.shape != base.shape[::-1]
            or matrix.stride() != base.stride()[::-1]
        ):
            return None
        return self.packed(base)

    def concatenated(self, tensors) -> object | None:
        """The int8 copy of `torch.cat(tensors)` when it is a prepared pair of quantised weights."""
        if not isinstance(tensors, (list, tuple)) or len(tensors) != 2:
            return None
        entry = self._pairs.get((id(tensors[0]), id(tensors[1])))
        return entry[2] if entry is not None and entry[0] is tensors[0] and entry[1] is tensors[1] else None


class _Int8Mode(TorchFunctionMode):
    """Routes fp32 `linear(x, W, b)` and `addmm(b, x, W.t())` over a quantised W to `quantized::linear_dynamic`."""

    def __init__(self, products: Int8Products):
        super().__init__()
        self.products = products

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is nn.functional.linear:
            out = self._linear(*args, **kwargs)
        elif func is torch.addmm:
            out = self._addmm(*args, **kwargs)
        elif func is torch.cat and not kwargs.get("dim") and len(args) == 1:
            packed = self.products.concatenated(args[0])
            out = func(*args, **kwargs)
            if packed is not None:
                setattr(out, _TAG, packed)  # the linear that reads this concatenation multiplies in int8
            return out
        else:
            out = None
        return func(*args, **kwargs) if out is None else out

    def _linear(self, x, weight, bias=None):
        packed = self.products.packed(weight)
        if packed is None or x.dtype != torch.float32:
            return None
        out = torch.ops.quantized.linear_dynamic(x.contiguous(), packed, True)
        return out if bias is None else out.add_(bias)

    def _addmm(self, bias, x, matrix, *, beta=1, alpha=1):
        packed = self.products.packed_transpose(matrix)
        if packed is None or x.dtype != torch.float32 or x.dim() != 2:
            return None
        out = torch.ops.quantized.linear_dynamic(x.contiguous(), packed, True)
        if alpha != 1:
            out.mul_(alpha)
        return out.add_(bias, alpha=beta)


def _prepack(weight: torch.Tensor):
    """int8, symmetric per output channel, prepacked (no bias: callers add it, as they pass it)."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
    zeros = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensors are deprecated for new code; their kernels are not gone
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(quantized, None)


def rerank_products(engine) -> Int8Products:
    """The int8 copies of every weight a rerank multiplies activations by, built once per engine (on first use)."""
    with _BUILD_LOCK:
        built = getattr(engine, "_int8_products", None)
        if built is None:
            built = Int8Products(_rerank_weights(engine), _key_value_pairs(engine.backbone))
            engine._int8_products = built
        return built


def _rerank_weights(engine) -> Iterator[torch.Tensor]:
    """2-D weights of the vision blocks the rerank runs, the cross-modal transforms, layers and poolers, and the
    ITM head (the text tower runs once per query, in fp32; its linears are left alone)."""
    bb = engine.backbone
    visual = bb.vision_model.visual
    for block in visual.transformer.resblocks[: engine.num_text_layers]:
        yield block.attn.in_proj_weight
        yield from _linear_weights(block)
    fusion = [
        bb.cross_modal_image_transform,
        bb.cross_modal_image_layers,
        bb.cross_modal_text_layers,
        bb.cross_modal_image_link_tower,
        bb.cross_modal_text_link_tower,
        bb.cross_modal_image_pooler,
        bb.cross_modal_text_pooler,
        engine.heads.itm,
    ]
    seen = set()
    for module in fusion:
        for weight in _linear_weights(module):
            if id(weight) not in seen:
                seen.add(id(weight))
                yield weight


def _linear_weights(module: nn.Module | None) -> Iterator[torch.Tensor]:
    if module is not None:
        for child in module.modules():
            if isinstance(child, nn.Linear):
                yield child.weight


def _key_value_pairs(backbone: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(key, value) weights of every cross-modal attention: model.py projects both with one concatenated matrix."""
    for layers in (backbone.cross_modal_image_layers, backbone.cross_modal_text_layers):
        for module in layers.modules():
            if hasattr(module, "key") and hasattr(module, "value") and isinstance(module.key, nn.Linear):
                yield module.key.weight, module.value.weight
