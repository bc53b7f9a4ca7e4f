"""The int8 rerank: the rerank's matrix products in int8 where the CPU has no native bf16.

Dynamic quantisation, as `torch.ao.quantization.quantize_dynamic` computes it, without swapping modules (the
fast paths in model.py read weights directly): each weight the rerank multiplies activations by gets an int8
copy, symmetric per output channel and prepacked for the CPU's int8 kernels (fbgemm on x86, QNNPACK on ARM);
each product quantises its input per call (per tensor, 7-bit, so AVX2's 16-bit pair sums cannot saturate),
multiplies in int8 and returns fp32. Attention scores, softmax, LayerNorm and activations stay fp32.

`Int8Products.active()` is a torch function mode, entered where autocast would be (model._rerank_precision),
that sends `linear` and `addmm` over a registered weight (or its transpose, or the key/value concatenation
the cross-modal attention builds) to `quantized::linear_dynamic`. The copies are built up front, in a pool of
`torch.get_num_threads()` threads (prepacking is single-threaded and releases the GIL, so a serial build
would use one core of many): the first time each half of the rerank enters int8 (`vision_states`, then
`itm_scores` per text length), model.py lists the products that half runs, with their scales, and
`Int8Products.prepare` builds the copies not yet made. A product no list names still gets its copy when it
first reads its weight (the lazy path). An engine that only embeds makes none. The fp32 weights stay the only
fp32 copy (a key/value concatenation is made for packing, then dropped); the int8 copies cost a quarter of
the weights they copy (docs/performance.md, "int8 rerank"). Embeddings never run under the mode, so index and
query vectors (and the index's fingerprint) are the fp32 ones.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_TAG = "_bt_int8_pair"  # attribute marking a concatenation of a registered (key, value) pair of weights or biases
_BUILD_LOCK = threading.Lock()
# Prepacking reads the process-wide quantized engine setting; whoever switches it holds this until it is restored.
_ENGINE_LOCK = threading.Lock()


def int8_engine() -> str | None:
    """The quantized engine whose int8 kernels this CPU has (None: none, int8 cannot run here)."""
    supported = torch.backends.quantized.supported_engines
    return next((name for name in ("x86", "fbgemm", "qnnpack") if name in supported), None)


class Int8Products:
    """int8 copies of a set of fp32 weights, prepacked up front (`prepare`) or as products first read them, and the
    mode that uses them.

    A copy is made per (weight, bias, alpha, beta) of a product, with the bias and the two scales folded in (per
    channel, scaling a weight scales its quantisation scales, not its int8 values), so the int8 kernel returns
    `alpha * x W^T + beta * b` in one pass. The model multiplies each weight one way, so each has one copy.
    """

    def __init__(self, operands: Iterable[torch.Tensor], pairs: Iterable[tuple[torch.Tensor, torch.Tensor]] = ()):
        """`operands`: the weights (and their biases) to multiply in int8; `pairs`: pairs of them that the model
        concatenates (key and value projections) before one product."""
        self.engine = int8_engine()
        if self.engine is None:
            raise RuntimeError("this torch build has no int8 (quantized) CPU kernels")
        self._operands = {id(t): t for t in operands}
        self._pairs = {(id(a), id(b)): (a, b) for a, b in pairs}
        self._copies: dict[tuple, tuple] = {}  # key -> (weight or None, bias or None, packed, bytes, fp32 bytes)
        self._prepared: set = set()  # the plans `prepare` has built
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._copies)

    @property
    def nbytes(self) -> int:
        """int8 values, fp64 scales and fp32 biases of the copies made so far."""
        return sum(entry[3] for entry in self._copies.values())

    @property
    def fp32_nbytes(self) -> int:
        """What the same weights take in fp32."""
        return sum(entry[4] for entry in self._copies.values())

    def active(self) -> _Int8Mode:
        """A context in which products by these weights run in int8."""
        return _Int8Mode(self)

    def prepare(self, plan: Hashable, products: Callable[[], Iterable[tuple]], workers: int | None = None) -> None:
        """Build the copies of `products()` not made yet, in a pool of `workers` threads (default: torch's thread
        count), once per `plan` (a name for the list; later calls return at once).

        Each product is `(weight, bias, alpha, beta)` as the model multiplies by it, where weight and bias are a
        registered tensor, or a registered (key, value) pair that the model concatenates (concatenated here for
        packing, then dropped); those over unregistered tensors are left to fp32, as the mode leaves them."""
        if plan in self._prepared:
            return
        with self._lock:  # concurrent first reranks build one set; the lazy path waits for it
            if plan in self._prepared:
                return
            wanted = {}
            for weight, bias, alpha, beta in products():
                key = self._planned_key(weight, bias, alpha, beta)
                if key is not None and key not in self._copies:
                    wanted[key] = (weight, bias, alpha, beta)
            # largest first, so that no thread is left with a big one at the end
            order = sorted(wanted.items(), key=lambda item: -_numel(item[1][0]))
            pool = ThreadPoolExecutor(workers or torch.get_num_threads(), thread_name_prefix="bt-int8-prepack")
            with _ENGINE_LOCK, _quantized_engine(self.engine), pool:
                self._copies.update(pool.map(lambda item: (item[0], _planned_entry(item[0], *item[1])), order))
            self._prepared.add(plan)
        _trim_heap()

    def _planned_key(self, weight, bias, alpha: float, beta: float) -> tuple | None:
        """The key `packed` will find the product's copy by (None: it reads an unregistered tensor, so stays fp32)."""
        weight_key = self._pair_or_key(weight)
        bias_key = None if bias is None else self._pair_or_key(bias)
        if weight_key is None or (bias is not None and bias_key is None):
            return None
        return (weight_key, bias_key, float(alpha), float(beta))

    def _pair_or_key(self, tensor):
        """`_key` of a tensor, or of the concatenation of a registered (key, value) pair (the tag it will carry)."""
        if not isinstance(tensor, tuple):
            return self._key(tensor)
        pair = self._pairs.get((id(tensor[0]), id(tensor[1])))
        registered = pair is not None and pair[0] is tensor[0] and pair[1] is tensor[1]
        return (id(tensor[0]), id(tensor[1])) if registered else None

    def tag_concatenation(self, tensors, result: torch.Tensor) -> None:
        """Mark `result = torch.cat(tensors)` when it joins a registered pair (a key and a value projection)."""
        if isinstance(tensors, (list, tuple)) and len(tensors) == 2:
            pair = self._pairs.get((id(tensors[0]), id(tensors[1])))
            if pair is not None and pair[0] is tensors[0] and pair[1] is tensors[1]:
                setattr(result, _TAG, (id(tensors[0]), id(tensors[1])))

    def packed(self, weight: torch.Tensor, bias: torch.Tensor | None, alpha: float = 1.0, beta: float = 1.0):
        """The prepacked int8 copy for `alpha * x @ weight.T + beta * bias` (None: `weight` has none)."""
        weight_key = self._key(weight)
        bias_key = None if bias is None else self._key(bias)
        if weight_key is None or (bias is not None and bias_key is None):
            return None
        key = (weight_key, bias_key, float(alpha), float(beta))
        entry = self._copies.get(key)
        if entry is None or not self._same(entry, weight, bias):
            with self._lock:  # concurrent first reranks make one copy
                entry = self._copies.get(key)
                if entry is None or not self._same(entry, weight, bias):
                    entry = self._copies[key] = self._pack(weight, bias, alpha, beta)
        return entry[2]

    def _key(self, tensor: torch.Tensor):
        """A registered parameter's id, or a registered pair's concatenation's tag (None: neither)."""
        tag = getattr(tensor, _TAG, None)
        if tag is not None:
            return tag
        return id(tensor) if self._operands.get(id(tensor)) is tensor else None

    @staticmethod
    def _same(entry: tuple, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
        """Copies of concatenations match by tag; of parameters, by identity."""
        held_weight, held_bias = entry[0], entry[1]
        return (held_weight is None or held_weight is weight) and (held_bias is None or held_bias is bias)

    def _pack(self, weight: torch.Tensor, bias: torch.Tensor | None, alpha: float, beta: float) -> tuple:
        """The lazy path: one copy, for a product that no `prepare` plan named."""
        with _ENGINE_LOCK, _quantized_engine(self.engine):
            return _entry(weight, bias, alpha, beta)


class _Int8Mode(TorchFunctionMode):
    """Routes fp32 `linear(x, W, b)` and `addmm(b, x, W.t())` over a quantised W to `quantized::linear_dynamic`,
    and tags the key/value concatenations the attention builds so that their product finds its copy."""

    def __init__(self, products: Int8Products):
        super().__init__()
        self.products = products

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = None
        if func is nn.functional.linear:
            out = self._linear(*args, **kwargs)
        elif func is torch.addmm:
            out = self._addmm(*args, **kwargs)
        elif func is torch.cat and len(args) == 1 and not kwargs.get("dim"):
            out = func(*args, **kwargs)
            self.products.tag_concatenation(args[0], out)
        return func(*args, **kwargs) if out is None else out

    def _linear(self, x, weight, bias=None):
        if x.dtype != torch.float32 or weight.dim() != 2:
            return None
        packed = self.products.packed(weight, bias)
        return None if packed is None else torch.ops.quantized.linear_dynamic(x.contiguous(), packed, True)

    def _addmm(self, bias, x, matrix, *, beta=1, alpha=1):
        base = matrix._base  # addmm reads W.t(): a transposed view of the weight
        if x.dtype != torch.float32 or x.dim() != 2 or base is None or matrix.dim() != 2 or bias.dim() != 1:
            return None
        if not alpha > 0:  # folded into the per-channel scales, which must stay positive
            return None
        if matrix.shape != base.shape[::-1] or matrix.stride() != base.stride()[::-1]:
            return None
        packed = self.products.packed(base, bias, alpha, beta)
        return None if packed is None else torch.ops.quantized.linear_dynamic(x.contiguous(), packed, True)


@contextlib.contextmanager
def _quantized_engine(engine: str):
    """Prepacked weights keep the kernel library they were packed for; calls need none."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _entry(weight: torch.Tensor, bias: torch.Tensor | None, alpha: float, beta: float) -> tuple:
    """A copy's entry: (weight or None, bias or None, packed, bytes, fp32 bytes)."""
    packed = _prepack(weight, None if bias is None else bias.detach() * beta, alpha)
    rows, cols = weight.shape
    held_weight = None if hasattr(weight, _TAG) else weight  # a transient concatenation: matched by its tag
    held_bias = None if bias is None or hasattr(bias, _TAG) else bias
    return held_weight, held_bias, packed, rows * (cols + 8 + (bias is not None) * 4), 4 * rows * cols


def _planned_entry(key: tuple, weight, bias, alpha: float, beta: float) -> tuple:
    """`_entry` in a pool thread, as the lazy path would make it under the rerank's inference mode (grad mode
    is per thread). A (key, value) pair is concatenated, tagged as the mode tags it, packed and dropped."""
    with torch.inference_mode():
        if isinstance(weight, tuple):
            weight = torch.cat(weight)
            setattr(weight, _TAG, key[0])
        if isinstance(bias, tuple):
            bias = torch.cat(bias)
            setattr(bias, _TAG, key[1])
        return _entry(weight, bias, alpha, beta)


def _trim_heap() -> None:
    """Hand the pool threads' freed temporaries back to the OS. glibc gives each thread its own heap (arena) and
    keeps what is freed there: without this, resident memory after a build at the default model's shapes is
    ~110 MiB (a quarter of the copies) above a serial build's. A no-op where libc has no malloc_trim."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's own symbols: libc's on Linux
    except (OSError, AttributeError, TypeError):  # no such symbol (macOS), no CDLL(None) (Windows)
        return None


def _numel(weight) -> int:
    return sum(t.numel() for t in weight) if isinstance(weight, tuple) else weight.numel()


def _prepack(weight: torch.Tensor, bias: torch.Tensor | None, alpha: float = 1.0):
    """`alpha * weight`, int8 symmetric per output channel (7-bit inputs), prepacked with `bias` folded in."""
    weight = weight.detach().float()
    largest = torch.maximum(weight.amax(dim=1), weight.amin(dim=1).neg())  # no full-size temporary (as abs would)
    scales = (largest / 127).clamp_min(1e-12).double()
    zeros = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensors are deprecated for new code; their kernels are not gone
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
        if alpha != 1:  # the same int8 values, scaled scales
            quantized = torch._make_per_channel_quantized_tensor(quantized.int_repr(), scales * alpha, zeros, 0)
        return torch.ops.quantized.linear_prepack(quantized, bias)


def rerank_products(engine) -> Int8Products:
    """The int8 copies of the weights a rerank multiplies activations by: one set per engine, built as each half of
    the rerank first enters int8 (model._rerank_precision prepares them)."""
    with _BUILD_LOCK:
        built = getattr(engine, "_int8_products", None)
        if built is None:
            built = engine._int8_products = Int8Products(_rerank_weights(engine), _key_value_pairs(engine.backbone))
        return built


def _rerank_weights(engine) -> Iterator[torch.Tensor]:
    """Weights and biases of the vision blocks the rerank runs, the cross-modal image transform, layers and
    poolers, and the ITM head (the text side runs once per query, in fp32; its linears are left alone)."""
    bb = engine.backbone
    for block in bb.vision_model.visual.transformer.resblocks[: engine.num_text_layers]:
        yield block.attn.in_proj_weight
        yield block.attn.in_proj_bias
        yield from _linear_parameters(block)
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
    for module in fusion:
        yield from _linear_parameters(module)


def _linear_parameters(module: nn.Module | None) -> Iterator[torch.Tensor]:
    if module is not None:
        for child in module.modules():
            if isinstance(child, nn.Linear):
                yield child.weight
                if child.bias is not None:
                    yield child.bias


def _key_value_pairs(backbone: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(key, value) weights and biases of every cross-modal attention: model.py projects both with one
    concatenated matrix and bias."""
    for layers in (backbone.cross_modal_image_layers, backbone.cross_modal_text_layers):
        for module in layers.modules():
            if isinstance(getattr(module, "key", None), nn.Linear) and isinstance(
                getattr(module, "value", None), nn.Linear
            ):
                yield module.key.weight, module.value.weight
                if module.key.bias is not None and module.value.bias is not None:
                    yield module.key.bias, module.value.bias
