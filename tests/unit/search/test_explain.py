"""Explanations (search/explain.py): the relevance rules on hand-made maps, words, windows, and `explain=True`
through the Searcher (the hits shown, from the rerank's own states)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from bt_search.engine.attention import FusionAttention, fusion_attention
from bt_search.errors import UsageError
from bt_search.media.images import Preprocessing, load_pixels, resized_shape
from bt_search.output.hits import hit_record
from bt_search.search.explain import (
    KeptStates,
    content_words,
    crop_window,
    explain_pairs,
    normalized_self,
    relevance,
)
from bt_search.search.hits import Explanation, hit_from_json
from bt_search.search.searcher import Searcher, Shortlist, rank_hits


def _maps(t: int, i: int, layers: int, seed: int = 0, gradients=None) -> FusionAttention:
    g = torch.Generator().manual_seed(seed)

    def probs(rows, cols):
        return torch.softmax(torch.randn(1, 2, rows, cols, generator=g), dim=-1)

    return FusionAttention(
        text_self=[probs(t, t) for _ in range(layers)],
        text_cross=[probs(t, i) for _ in range(layers)],
        image_self=[probs(i, i) for _ in range(layers)],
        image_cross=[probs(i, t) for _ in range(layers)],
        logits=torch.zeros(1, 2),
        gradients=gradients,
    )


def test_rollout_of_one_layer_is_chefers_rule_written_out():
    """One layer from identity relevance: R_tt = I + Ā_tt, and R_ti = R̄_tt^T Ā_ti R̄_ii with R̄_ii = I and
    R̄_tt = I + Ā_tt (Ā_tt's rows already sum to 1)."""
    maps = _maps(3, 5, layers=1)
    a_tt, a_ti = maps.text_self[0].mean(dim=1)[0], maps.text_cross[0].mean(dim=1)[0]
    expected = (torch.eye(3) + a_tt).T @ a_ti
    torch.testing.assert_close(relevance(maps, "rollout")[0], expected)


def test_two_layers_carry_the_image_streams_relevance_into_the_text():
    """The second layer's text cross-attention reads the image relevance after layer one, which the image
    stream's own attention over the text changed: shuffle layer one's image maps and R_ti changes."""
    maps = _maps(3, 5, layers=2, seed=1)
    before = relevance(maps, "rollout")
    maps.image_self[0] = maps.image_self[0].flip(-1)
    assert not torch.allclose(before, relevance(maps, "rollout"))


def test_the_gradient_method_keeps_only_positive_gradient_times_attention():
    maps = _maps(3, 5, layers=2)
    ones = {kind: [torch.ones_like(m) for m in getattr(maps, kind)] for kind in maps.KINDS}
    minus = {kind: [-g for g in grads] for kind, grads in ones.items()}
    maps.gradients = ones  # gradient 1 everywhere: the maps themselves, as rollout takes them
    torch.testing.assert_close(relevance(maps, "gradient"), relevance(maps, "rollout"))
    maps.gradients = minus  # nothing speaks for the match: no relevance at all
    assert torch.count_nonzero(relevance(maps, "gradient")) == 0
    with pytest.raises(UsageError, match="`method`"):
        relevance(maps, "magic")


def test_normalized_self_keeps_identity_rows_and_scales_the_rest():
    r = torch.eye(3).unsqueeze(0).clone()
    torch.testing.assert_close(normalized_self(r), r)
    r[0, 1] = torch.tensor([2.0, 1.0, 6.0])  # beyond the identity: 2, 0, 6 -> 0.25, 0, 0.75
    torch.testing.assert_close(normalized_self(r)[0, 1], torch.tensor([0.25, 1.0, 0.75]))


def test_content_words_merge_repeats_and_skip_function_words():
    text = "a red circle left of a red square"
    # <s> a| red| cir|cle| left| of| a| red| square </s>
    offsets = [(0, 0), (0, 1), (2, 5), (6, 9), (9, 12), (13, 17), (18, 20), (21, 22), (23, 26), (27, 33), (0, 0)]
    assert content_words(text, offsets) == [("red", [2, 8]), ("circle", [3, 4]), ("left", [5]), ("square", [9])]


@pytest.mark.parametrize("width,height", [(64, 64), (300, 120), (90, 200), (20, 10)])
def test_crop_window_is_the_centre_crop_the_model_sees(width, height):
    prep = Preprocessing(size=64, crop=64)
    x0, y0, x1, y1 = crop_window(width, height, prep)
    resized_h, resized_w = resized_shape(height, width, prep)
    assert x1 - x0 == pytest.approx(64 / resized_w, abs=1e-3) and y1 - y0 == pytest.approx(64 / resized_h, abs=1e-3)
    assert (x0 + x1) / 2 == pytest.approx(0.5, abs=1 / resized_w) and (y0 + y1) / 2 == pytest.approx(
        0.5, abs=1 / resized_h
    )


def test_an_image_that_cannot_be_read_here_is_explained_over_its_whole_area(tmp_path):
    from bt_search.search.explain import image_window

    assert image_window(str(tmp_path / "gone.png"), Preprocessing(size=64, crop=64)) == (0.0, 0.0, 1.0, 1.0)


def test_kept_states_hold_exactly_the_best_in_rank_order():
    rng = np.random.default_rng(3)
    scores, sims = rng.random(11).astype(np.float32), rng.random(11).astype(np.float32)
    scores[4] = scores[7]  # a tie: broken by cosine, then path, as rank_hits breaks it
    paths = [f"/p{n:02d}" for n in range(11)]
    states = torch.arange(11.0)
    kept = KeptStates(4)
    for start in range(0, 11, 3):  # in chunks, as the rerank offers them
        part = slice(start, start + 3)
        kept.offer([(path, None) for path in paths[part]], scores[part], sims[part], states[part])
    hits = rank_hits(Shortlist("q", np.arange(11), sims, paths), scores, top_k=4)
    assert list(kept.by_key()) == [(hit.path, None) for hit in hits]
    assert [float(v) for v in kept.by_key().values()] == [float(paths.index(h.path)) for h in hits]


def test_kept_states_of_video_frames_follow_frames_best():
    """Frames of one video share its path: with frames="best" its later frames make way for other files, as
    rank_hits leaves them out of the hits."""
    scores, sims = np.array([0.9, 0.8, 0.7, 0.6]), np.zeros(4)
    keys = [("/v.mkv", 0.0), ("/v.mkv", 5.0), ("/a.png", None), ("/b.png", None)]
    states = torch.arange(4.0)
    best, every = KeptStates(2, one_per_path=True), KeptStates(2)
    for kept in (best, every):
        kept.offer(keys, scores, sims, states)
    assert list(best.by_key()) == [("/v.mkv", 0.0), ("/a.png", None)]
    assert list(every.by_key()) == [("/v.mkv", 0.0), ("/v.mkv", 5.0)]


def test_searcher_explains_the_hits_shown_from_the_reranks_states(engine, library, monkeypatch):
    reader, _, paths, _ = library
    calls = []
    original = engine.vision_states
    monkeypatch.setattr(engine, "vision_states", lambda pixels: calls.append(len(pixels)) or original(pixels))
    searcher = Searcher(reader, engine, batch_size=4)
    (plain,) = searcher.search(["a red circle left of a blue square"], top_k=2, shortlist=4)
    seen = sum(calls)
    (explained,) = searcher.search(["a red circle left of a blue square"], top_k=2, shortlist=4, explain=True)
    assert sum(calls) - seen == seen == 4  # explaining ran no vision-tower pass of its own
    assert [dataclasses.replace(h, explanation=None) for h in explained] == plain
    # each hit's explanation is the one explain_pairs gives for its own image, computed alone
    for hit in explained:
        pixels, _ = load_pixels(hit.path, engine.preprocessing)
        states = engine.vision_states(pixels[None])
        (alone,) = explain_pairs(engine, engine.text_states(hit.query), states, [hit.explanation.window])
        assert np.allclose(alone.query, hit.explanation.query, atol=2e-3)
        assert (
            [w for w, _ in alone.words]
            == [w for w, _ in hit.explanation.words]
            == ["red", "circle", "left", "blue", "square"]
        )
    e = explained[0].explanation
    assert e.method == "attention" and e.grid == (4, 4) and max(e.query) == 1.0 and len(e.query) == 16
    assert e.window == (0.0, 0.0, 1.0, 1.0)  # t0.png is 64 px square: the model sees all of it
    with pytest.raises(UsageError, match="`explain` needs the rerank"):
        searcher.search(["a red circle"], rerank=False, explain=True)


def test_a_folded_query_explains_only_the_hits_it_shows(engine, library, monkeypatch):
    import bt_search.search.explain as explain_module
    from bt_search.search.query import QueryRequest, run_query

    reader, _, _, _ = library
    explained_pairs = []
    original = explain_module.explain_pairs
    monkeypatch.setattr(
        explain_module,
        "explain_pairs",
        lambda *args, **kw: explained_pairs.append(len(args[2])) or original(*args, **kw),
    )
    request = QueryRequest(queries=("a red circle left of a blue square",), top_k=2, shortlist=6, explain=True)
    (hits,) = run_query(Searcher(reader, engine, batch_size=4), request)
    # the search ranked 6 candidates to fold them; only the 2 shown ran the fusion layers for their maps
    assert explained_pairs == [2] and len(hits) == 2 and all(h.explanation is not None for h in hits)


def test_explanations_travel_as_json_and_jsonl_carries_them():
    e = Explanation("gradient", (2, 2), (0.0, -0.1, 1.0, 1.1), (1.0, 0.5, 0.0, 0.25), (("red", (0.0, 1.0, 0.5, 0.5)),))
    from bt_search.search.hits import Hit

    hit = Hit("q", 1, "/a.png", 1.2, 0.3, 2, itm=0.9, explanation=e)
    wire = json.loads(json.dumps(dataclasses.asdict(hit)))  # as the server sends it
    assert hit_from_json(wire) == hit
    record = hit_record(hit)
    assert record["explanation"] == wire["explanation"] and list(record)[-1] == "explanation"
    assert "explanation" not in hit_record(dataclasses.replace(hit, explanation=None))
    assert e.word_map("RED") == (0.0, 1.0, 0.5, 0.5) and e.word_map("blue") is None


def test_the_default_map_is_the_last_fusion_layers_attention_and_needs_no_gradients(engine, sample_images):
    from bt_search.media.images import preprocess
    from bt_search.search.explain import scaled

    states = engine.vision_states(np.stack([preprocess(sample_images[0], engine.preprocessing)]))
    text = engine.text_states("a red circle")
    maps = fusion_attention(engine, text, states)
    assert maps.gradients is None
    (explanation,) = explain_pairs(engine, text, states, [(0.0, 0.0, 1.0, 1.0)])
    last = maps.text_cross[-1].mean(dim=1)[0]  # [tokens, 1 + patches]: <s> a red circle </s>
    assert explanation.method == "attention" and explanation.query == scaled(last[0, 1:])
    assert explanation.words == (("red", scaled(last[2, 1:])), ("circle", scaled(last[3:-1, 1:].mean(dim=0))))


def test_an_image_query_cannot_be_explained():
    from bt_search.search.query import QueryRequest

    with pytest.raises(UsageError, match="`explain` shows where a text matched"):
        QueryRequest(image="/x.png", explain=True)
