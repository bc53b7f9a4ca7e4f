"""The engine's tower-only and fusion-only paths against the HF reference classes, at fp32, tolerance 1e-4."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bt_search.engine import model
from bt_search.engine.loading import load_engine
from bt_search.engine.model import TruncatedQueryWarning
from bt_search.media.images import normalize, preprocess, resize_and_crop
from tests.support.checkpoints import CAPTIONS, SPECS
from tests.support.reference import reference_embeddings, reference_itm, reference_models, reference_processor

TOL = 1e-4


def _pixels(engine, images):
    return np.stack([preprocess(img, engine.preprocessing) for img in images])


@pytest.fixture(scope="module")
def engines(checkpoints):
    """fp32: the reference's precision (`auto` is tested on its own below)."""
    return {name: load_engine(str(path), device="cpu", precision="fp32") for name, path in checkpoints.items()}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_preprocessing_equals_processor(spec, checkpoints, engines, sample_images):
    processor = reference_processor(checkpoints[spec.name])
    expected = processor.image_processor(images=sample_images, return_tensors="np")["pixel_values"]
    ours = _pixels(engines[spec.name], sample_images)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_uint8_crops_normalised_on_device_equal_the_float_path(spec, engines, sample_images):
    # Decode workers hand over uint8 crops; the engine must give exactly what preprocessed floats give.
    engine = engines[spec.name]
    crops = np.stack([resize_and_crop(img, engine.preprocessing) for img in sample_images])
    floats = _pixels(engine, sample_images)
    assert crops.dtype == np.uint8
    np.testing.assert_array_equal(normalize(crops, engine.preprocessing), floats)
    np.testing.assert_array_equal(engine._pixels_on_device(crops).numpy(), floats)
    np.testing.assert_array_equal(engine.encode_images(crops), engine.encode_images(floats))
    torch.testing.assert_close(engine.vision_states(crops), engine.vision_states(floats), rtol=0, atol=0)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_image_and_text_embeddings_equal_reference(spec, checkpoints, engines, sample_images):
    engine = engines[spec.name]
    ref_images, ref_texts = reference_embeddings(checkpoints[spec.name], sample_images, CAPTIONS[: len(sample_images)])
    np.testing.assert_allclose(engine.encode_images(_pixels(engine, sample_images)), ref_images, atol=TOL)
    np.testing.assert_allclose(engine.encode_texts(CAPTIONS[: len(sample_images)]), ref_texts, atol=TOL)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_itm_scores_equal_reference(spec, checkpoints, engines, sample_images):
    engine = engines[spec.name]
    states = engine.vision_states(_pixels(engine, sample_images))
    for text in CAPTIONS[:3]:
        expected = reference_itm(checkpoints[spec.name], sample_images, text)
        ours = engine.itm_scores(engine.text_states(text), states)
        np.testing.assert_allclose(ours, expected, atol=TOL)
        assert np.ptp(expected) > 1e-3, "random model gives distinct scores, so the comparison can fail"


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)], ids=["fp32", "bf16"])
def test_reassociated_attention_equals_the_plain_order(engines, monkeypatch, dtype, tol):
    """Text-over-image and image-over-text attention run with the projections moved to the short side; the
    plain SDPA order is the reference, with padded keys on either side (a masked key must get no weight)."""
    engine = engines[SPECS[3].name]
    block = copy.deepcopy(engine.backbone.cross_modal_image_layers[1].crossattention).to(dtype)
    width = engine.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    many, few = (torch.randn(3, n, width, generator=generator).to(dtype) for n in (40, 6))
    few_mask = torch.zeros(3, 1, 1, 6)
    few_mask[1, ..., 4:] = torch.finfo(torch.float32).min  # query 1 padded to 6 tokens
    many_mask = torch.zeros(3, 1, 1, 40)
    many_mask[2, ..., 30:] = torch.finfo(torch.float32).min
    with torch.inference_mode():
        plain_few = block.output(model._bert_attention(block.self, few, many, many_mask), few)
        plain_many = block.output(model._bert_attention(block.self, many, few, few_mask), many)
        truncated = block.output(model._few_query_attention(block.self, few[2:], many[2:, :30], None), few[2:])
        monkeypatch.setattr(model, "_bert_attention", None)  # the folds must be what runs for these lengths
        folded_few = model._attention_block(block, few, many, many_mask)
        folded_many = model._attention_block(block, many, few, few_mask)
    torch.testing.assert_close(folded_few.float(), plain_few.float(), rtol=0, atol=tol)
    torch.testing.assert_close(folded_many.float(), plain_many.float(), rtol=0, atol=tol)
    torch.testing.assert_close(folded_few[2:].float(), truncated.float(), rtol=0, atol=tol)


def test_rerank_reuses_vision_states_across_queries_and_subsets(engines, sample_images):
    engine = engines[SPECS[0].name]
    states = engine.vision_states(_pixels(engine, sample_images))
    text = engine.text_states(CAPTIONS[0])
    all_scores = engine.itm_scores(text, states)
    subset = engine.itm_scores(text, states[[3, 1]])
    np.testing.assert_allclose(subset, all_scores[[3, 1]], atol=1e-5)


def test_embeddings_are_batch_size_invariant(engines, sample_images):
    engine = engines[SPECS[1].name]
    pixels = _pixels(engine, sample_images)
    batched = engine.encode_images(pixels)
    singles = np.concatenate([engine.encode_images(pixels[i : i + 1]) for i in range(len(pixels))])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_padding_a_query_into_a_longer_batch_changes_nothing(engines):
    engine = engines[SPECS[0].name]
    short = "two cats"
    alone = engine.encode_texts([short])[0]
    padded = engine.encode_texts([CAPTIONS[4] + " " + CAPTIONS[5], short, CAPTIONS[0]])[1]
    np.testing.assert_allclose(padded, alone, atol=1e-5)


def test_long_query_is_truncated_with_a_warning(checkpoints, engines):
    engine = engines[SPECS[0].name]
    long_query = " ".join(["red circle"] * 1000)
    with pytest.warns(TruncatedQueryWarning, match="truncated"):
        ours = engine.encode_texts([long_query])[0]
    contrastive, _ = reference_models(checkpoints[SPECS[0].name])
    ids = engine.tokenizer([long_query], truncation=True, max_length=engine.max_text_len, return_tensors="pt")
    assert ids["input_ids"].shape[1] == engine.max_text_len
    pixels = torch.zeros(1, 3, 64, 64)
    with torch.inference_mode():
        expected = contrastive(**ids, pixel_values=pixels).text_embeds[0].numpy()
    np.testing.assert_allclose(ours, expected, atol=TOL)
    with pytest.warns(TruncatedQueryWarning):
        states = engine.text_states(long_query)
    assert states.streams.shape[1] == engine.max_text_len


def test_one_backbone_in_memory(checkpoints, engines):
    engine = engines[SPECS[0].name]
    contrastive, retrieval = reference_models(checkpoints[SPECS[0].name])
    modules = [engine.backbone, engine.heads.itc_text, engine.heads.itc_image, engine.heads.itm]
    storages = {p.untyped_storage().data_ptr(): p.numel() for m in modules for p in m.parameters()}
    held = sum(storages.values())
    expected = sum(p.numel() for p in contrastive.parameters()) - 1 - _numel(contrastive.itc_cross_modal_head)
    expected += _numel(retrieval.itm_score)
    assert held == expected
    backbone_params = sum(p.numel() for p in engine.backbone.parameters())
    assert held < 1.2 * backbone_params, "heads are small; a second backbone copy would double this"


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_bf16_stays_close_to_the_fp32_reference(checkpoints, sample_images):
    """The reduced-precision path (default on CUDA, opt-in on CPU) tracks the fp32 reference: cosine >= 0.99
    per embedding, ITM scores within 0.02."""
    path = checkpoints[SPECS[0].name]
    engine = load_engine(str(path), device="cpu", precision="bf16")
    assert engine.dtype == torch.bfloat16
    ref_images, ref_texts = reference_embeddings(path, sample_images, CAPTIONS[: len(sample_images)])
    images = engine.encode_images(_pixels(engine, sample_images))
    texts = engine.encode_texts(CAPTIONS[: len(sample_images)])
    assert images.dtype == np.float32
    assert np.min(np.sum(images * ref_images, axis=1)) >= 0.99
    assert np.min(np.sum(texts * ref_texts, axis=1)) >= 0.99
    assert not np.allclose(images, ref_images, atol=1e-6), "bf16 really ran (else this test proves nothing)"
    expected = reference_itm(path, sample_images, CAPTIONS[0])
    ours = engine.itm_scores(engine.text_states(CAPTIONS[0]), engine.vision_states(_pixels(engine, sample_images)))
    np.testing.assert_allclose(ours, expected, atol=0.02)


@pytest.mark.parametrize(
    "precision, device, native_bf16, expected",
    [
        ("auto", "cpu", True, (torch.float32, torch.bfloat16)),
        ("auto", "cpu", False, (torch.float32, torch.int8)),
        ("auto", "cuda", False, (torch.bfloat16, torch.bfloat16)),
        ("auto", "cuda", True, (torch.bfloat16, torch.bfloat16)),
        ("auto", "mps", True, (torch.float32, torch.float32)),
        ("auto", "mps", False, (torch.float32, torch.float32)),
        ("fp32", "cpu", True, (torch.float32, torch.float32)),
        ("fp32", "cpu", False, (torch.float32, torch.float32)),
        ("int8", "cpu", True, (torch.float32, torch.int8)),
        ("bf16", "cpu", False, (torch.bfloat16, torch.bfloat16)),
        ("fp16", "cuda", False, (torch.float16, torch.float16)),
    ],
)
def test_precision_resolves_to_embedding_and_rerank_dtypes(monkeypatch, precision, device, native_bf16, expected):
    from bt_search.engine import loading

    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native_bf16)
    assert loading.resolve_dtypes(precision, torch.device(device)) == expected


@pytest.mark.parametrize(
    "flags, machine, features, native",
    [
        ({"_is_avx512_bf16_supported": True}, "x86_64", "", True),
        ({"_is_amx_tile_supported": True}, "x86_64", "", True),
        ({}, "x86_64", "", False),
        ({}, "aarch64", "Features\t: fp asimd sve bf16 i8mm\n", True),
        ({}, "aarch64", "Features\t: fp asimd crc32 atomics\n", False),
    ],
    ids=["avx512-bf16", "amx", "avx2-only", "arm-bf16", "arm-no-bf16"],
)
def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path, flags, machine, features, native):
    """`auto` picks bf16 or int8 by these flags: torch's x86 probes, /proc/cpuinfo's Features on ARM Linux."""
    from bt_search.engine import loading

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda value=flags.get(probe, False): value, raising=False)
    monkeypatch.setattr(loading.platform, "machine", lambda: machine)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\n" + features)
    real_path = loading.Path
    monkeypatch.setattr(loading, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert loading.cpu_has_native_bf16() is native
    expected = torch.bfloat16 if native else torch.int8
    assert loading.resolve_dtypes("auto", torch.device("cpu")) == (torch.float32, expected)


@pytest.mark.parametrize(
    "precision, device, message",
    [
        ("int4", "cpu", "unknown precision 'int4'"),
        ("int8", "cuda", "`precision=int8` runs on CPU only"),
        ("int8", "mps", "`precision=int8` runs on CPU only"),
    ],
)
def test_unknown_or_misplaced_precision_is_a_usage_error(precision, device, message):
    from bt_search.engine.loading import resolve_dtypes
    from bt_search.errors import UsageError

    with pytest.raises(UsageError, match=message):
        resolve_dtypes(precision, torch.device(device))


def test_auto_on_a_native_bf16_cpu_embeds_in_fp32_and_reranks_in_bf16_over_one_copy(
    monkeypatch, checkpoints, engines, sample_images
):
    """`auto` on an AVX512-BF16/AMX CPU: ITC embeddings identical to fp32 (the index does not change), rerank in
    bf16 within 0.02 of the HF reference, and the weights held once, in fp32 (autocast casts as it goes)."""
    from bt_search.engine import loading

    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    spec = SPECS[0]
    path, fp32 = checkpoints[spec.name], engines[spec.name]
    auto = load_engine(str(path), device="cpu", precision="auto")
    assert (auto.dtype, auto.rerank_dtype) == (torch.float32, torch.bfloat16)
    assert {p.dtype for p in auto.backbone.parameters()} == {torch.float32}
    assert _numel(auto.backbone) == _numel(fp32.backbone)
    pixels = _pixels(auto, sample_images)
    np.testing.assert_array_equal(auto.encode_images(pixels), fp32.encode_images(pixels))
    np.testing.assert_array_equal(auto.encode_texts(CAPTIONS[:3]), fp32.encode_texts(CAPTIONS[:3]))
    expected = reference_itm(path, sample_images, CAPTIONS[0])
    ours = auto.itm_scores(auto.text_states(CAPTIONS[0]), auto.vision_states(pixels))
    np.testing.assert_allclose(ours, expected, atol=0.02)
    assert not np.allclose(ours, expected, atol=1e-5), "the rerank really ran in bf16 (else this test proves nothing)"


@pytest.fixture(scope="module")
def int8_engines(checkpoints):
    return {name: load_engine(str(path), device="cpu", precision="int8") for name, path in checkpoints.items()}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_int8_rerank_stays_close_to_the_reference(spec, checkpoints, int8_engines, engines, sample_images):
    """`int8` (and `auto` without native bf16): ITM within 0.02 of BridgeTowerForImageAndTextRetrieval, with the
    products really in int8, over the one fp32 backbone; embeddings identical to fp32's (the index is unchanged)."""
    engine, fp32 = int8_engines[spec.name], engines[spec.name]
    assert (engine.dtype, engine.rerank_dtype) == (torch.float32, torch.int8)
    pixels = _pixels(engine, sample_images)
    np.testing.assert_array_equal(engine.encode_images(pixels), fp32.encode_images(pixels))
    np.testing.assert_array_equal(engine.encode_texts(CAPTIONS[:3]), fp32.encode_texts(CAPTIONS[:3]))
    states = engine.vision_states(pixels)
    for text in CAPTIONS[:1]:  # each reference call loads the HF model
        expected = reference_itm(checkpoints[spec.name], sample_images, text)
        ours = engine.itm_scores(engine.text_states(text), states)
        np.testing.assert_allclose(ours, expected, atol=0.02)
        assert not np.allclose(ours, expected, atol=1e-5), "the rerank really ran in int8 (else this proves nothing)"
    assert {p.dtype for p in engine.backbone.parameters()} == {torch.float32}
    assert _numel(engine.backbone) == _numel(fp32.backbone), "one fp32 backbone; the int8 copies sit beside it"


def test_int8_quantises_every_product_of_the_rerank(int8_engines, sample_images):
    """No linear or addmm over a weight in vision_states or itm_scores reaches the fp32 kernels: each reads an int8
    copy (a model.py change that multiplies by a weight another way shows here). In fp32 the same watch sees them."""
    from torch.overrides import TorchFunctionMode

    engine = int8_engines[SPECS[3].name]
    weights = {id(p) for m in (engine.backbone, engine.heads.itm) for p in m.parameters() if p.dim() == 2}

    class Watch(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.fp32 = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.nn.functional.linear, torch.addmm):
                weight = args[1] if func is torch.nn.functional.linear else args[2]
                if id(weight) in weights or id(weight._base) in weights:
                    self.fp32.append(tuple(weight.shape))
            return func(*args, **(kwargs or {}))

    pixels, text = _pixels(engine, sample_images), engine.text_states(CAPTIONS[0])  # the text side: fp32
    watched = {}
    for rerank_dtype in (torch.int8, torch.float32):
        engine.rerank_dtype = rerank_dtype
        try:
            with Watch() as watch:
                engine.itm_scores(text, engine.vision_states(pixels))
        finally:
            engine.rerank_dtype = torch.int8
        watched[rerank_dtype] = watch.fp32
    assert watched[torch.int8] == []
    assert len(watched[torch.float32]) > 20, "the watch sees fp32 products (else this test proves nothing)"
