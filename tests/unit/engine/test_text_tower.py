"""The torch-only text tower (engine/text_tower.py) that cosine search loads: the reference's embeddings at fp32,
1e-4, the reference tokenizer's ids exactly, and transformers' classes wherever it cannot promise that."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from bt_search.engine.loading import load_engine
from bt_search.engine.model import TruncatedQueryWarning
from bt_search.engine.text_tower import FastTokenizer, TextModel, light_config
from tests.support.checkpoints import CAPTIONS, SPECS
from tests.support.reference import reference_embeddings

TOL = 1e-4
DEMO = Path(__file__).resolve().parents[3] / "sample_data" / "demo-model"
TEXTS = [
    *CAPTIONS,
    "<mask> two  spaces and\ttabs ",
    "héllo wörld, 中文 and emoji 🐈",
    "",
    "A",
    "cats " * 60,  # longer than the tiny models' texts: truncated, with a warning
]


@pytest.fixture(scope="module")
def light(checkpoints):
    return {
        name: load_engine(str(path), device="cpu", precision="fp32", text_only=True)
        for name, path in checkpoints.items()
    }


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_text_only_engines_use_the_torch_only_tower(spec, light):
    engine = light[spec.name]
    assert isinstance(engine.backbone.text_model, TextModel)
    assert isinstance(engine.tokenizer, FastTokenizer) == (spec.layout == "transformers")  # hub: vocab + merges


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_text_embeddings_equal_the_reference(spec, checkpoints, light, sample_images):
    texts = CAPTIONS[: len(sample_images)]  # one padded batch of different lengths
    _, expected = reference_embeddings(checkpoints[spec.name], sample_images, texts)
    np.testing.assert_allclose(light[spec.name].encode_texts(texts), expected, atol=TOL)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_text_equals_the_full_engine_to_the_bit_alone_and_in_a_batch(spec, checkpoints, light):
    """The full engine runs transformers' own modules (held to the reference in test_towers_match_reference); the
    same bits, so a server (full engine) and a `--no-rerank` query in-process print the same scores."""
    full = load_engine(str(checkpoints[spec.name]), device="cpu", precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedQueryWarning)
        batch = light[spec.name].encode_texts(TEXTS)
        np.testing.assert_array_equal(batch, full.encode_texts(TEXTS))
        alone = np.concatenate([light[spec.name].encode_texts([text]) for text in TEXTS])
    np.testing.assert_allclose(alone, batch, atol=TOL)
    assert light[spec.name].embedding_fingerprint() == full.embedding_fingerprint()


@pytest.mark.parametrize("where", ["spec", "demo"])
def test_token_ids_equal_the_reference_tokenizer(where, checkpoints):
    from transformers import AutoTokenizer

    checkpoint = checkpoints[SPECS[0].name] if where == "spec" else DEMO
    ours, theirs = FastTokenizer(checkpoint), AutoTokenizer.from_pretrained(str(checkpoint))
    for texts in [[text] for text in TEXTS] + [TEXTS]:
        for options in ({"truncation": False}, {"truncation": True, "max_length": 9}):
            mine = ours(texts, padding=True, return_tensors="pt", **options)
            expected = theirs(texts, padding=True, return_tensors="pt", **options)
            for key in ("input_ids", "attention_mask"):
                assert mine[key].tolist() == expected[key].tolist(), (texts, options, key)


def _edited(checkpoint: Path, tmp_path: Path, change) -> Path:
    copy = Path(shutil.copytree(checkpoint, tmp_path / "edited"))
    config = json.loads((copy / "config.json").read_text())
    change(config)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["text_config"].update(hidden_act="gelu_new"),
        lambda c: c["text_config"].update(is_decoder=True),
        lambda c: c.update(text_config_dict=c["text_config"]),
        lambda c: c.update(model_type="bert"),
    ],
    ids=["other-activation", "decoder", "text_config_dict", "not-bridgetower"],
)
def test_configs_it_cannot_promise_go_through_transformers(change, checkpoints, tmp_path):
    assert light_config(_edited(checkpoints[SPECS[0].name], tmp_path, change)) is None


def test_a_config_without_text_defaults_reads_transformers_defaults(checkpoints, tmp_path):
    """Keys a config.json leaves out take BridgeTowerTextConfig's defaults, as transformers reads them."""
    from transformers import BridgeTowerConfig

    def drop(config):
        for key in ("hidden_act", "layer_norm_eps", "pad_token_id", "type_vocab_size"):
            config["text_config"].pop(key, None)

    edited = _edited(checkpoints[SPECS[0].name], tmp_path, drop)
    ours, theirs = light_config(edited).text_config, BridgeTowerConfig.from_pretrained(str(edited)).text_config
    for key in ("hidden_act", "layer_norm_eps", "pad_token_id", "type_vocab_size", "max_position_embeddings"):
        assert getattr(ours, key) == getattr(theirs, key), key
