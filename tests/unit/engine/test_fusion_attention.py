"""The fusion layers' attention maps (engine/attention.py) against the HF reference, over the rerank's own states.

`BridgeTowerForImageAndTextRetrieval(..., output_attentions=True)` returns each cross-modal layer's self-attention
maps (text, image) in `attentions`; the cross-attention maps it computes in the same call (its
BridgeTowerCrossAttention modules, eager) are read with forward hooks, since transformers does not collect them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bt_search.engine.attention import fusion_attention
from bt_search.engine.loading import load_engine
from bt_search.media.images import preprocess
from tests.support.checkpoints import CAPTIONS, SPECS
from tests.support.reference import reference_processor

TOL = 1e-4


def _reference_maps(checkpoint, images, text):
    from transformers import BridgeTowerForImageAndTextRetrieval
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = BridgeTowerForImageAndTextRetrieval.from_pretrained(str(checkpoint), attn_implementation="eager").eval()
    inputs = reference_processor(checkpoint)(images=images, text=[text] * len(images), return_tensors="pt")
    cross = {"text": [], "image": []}
    hooks = [
        layer.crossattention.self.register_forward_hook(lambda m, args, out, kind=kind: cross[kind].append(out[1]))
        for kind in ("text", "image")
        for layer in getattr(model.bridgetower, f"cross_modal_{kind}_layers")
    ]
    with torch.inference_mode():
        out = model(**inputs, output_attentions=True)
    for hook in hooks:
        hook.remove()
    return out, cross


@pytest.mark.parametrize("spec", [SPECS[0], SPECS[2]], ids=lambda s: s.name)  # both layouts, two link towers
def test_attention_maps_equal_the_reference(spec, checkpoints, sample_images):
    engine = load_engine(str(checkpoints[spec.name]), device="cpu", precision="fp32")
    images = sample_images[:3]
    text = CAPTIONS[0]
    states = engine.vision_states(np.stack([preprocess(img, engine.preprocessing) for img in images]))
    ours = fusion_attention(engine, engine.text_states(text), states, gradients=True)
    reference, cross = _reference_maps(checkpoints[spec.name], images, text)
    assert len(ours.text_cross) == len(cross["text"]) == engine.num_cross_layers
    for layer, (text_self, image_self) in enumerate(reference.attentions):
        torch.testing.assert_close(ours.text_self[layer], text_self, atol=TOL, rtol=0)
        torch.testing.assert_close(ours.image_self[layer], image_self, atol=TOL, rtol=0)
        torch.testing.assert_close(ours.text_cross[layer], cross["text"][layer], atol=TOL, rtol=0)
        torch.testing.assert_close(ours.image_cross[layer], cross["image"][layer], atol=TOL, rtol=0)
    torch.testing.assert_close(ours.logits, reference.logits, atol=TOL, rtol=0)
    # the rerank's own score of the same states is the same match
    itm = engine.itm_scores(engine.text_states(text), states)
    np.testing.assert_allclose(torch.softmax(ours.logits, -1)[:, 1].numpy(), itm, atol=TOL)


def test_gradients_are_those_of_the_match_log_odds(engine, sample_images):
    """Gradients come in the maps' layout, and are those of what the poolers read: in the last layer only the CLS
    rows reach the ITM head, so every other row's gradient there is exactly zero."""
    states = engine.vision_states(np.stack([preprocess(img, engine.preprocessing) for img in sample_images[:2]]))
    text = engine.text_states(CAPTIONS[1])
    maps = fusion_attention(engine, text, states, gradients=True)
    assert maps.gradients is not None
    for kind in maps.KINDS:
        assert [g.shape for g in maps.gradients[kind]] == [m.shape for m in getattr(maps, kind)]
    last = maps.gradients["text_cross"][-1]
    assert torch.count_nonzero(last[:, :, 1:]) == 0 and torch.count_nonzero(last[:, :, 0]) > 0
    without = fusion_attention(engine, text, states, gradients=False)
    assert without.gradients is None
    torch.testing.assert_close(without.text_cross[0], maps.text_cross[0])
