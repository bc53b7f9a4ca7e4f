"""Query terms: parsing, the no-rerank vector against numpy over the HF reference embeddings, negatives in
rerank against the HF reference ITM, and the --score variants."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bt_search.engine.loading import load_engine
from bt_search.errors import UsageError
from bt_search.search.searcher import Searcher, blend_scores
from bt_search.search.term_vectors import query_vector
from bt_search.search.terms import Terms, Weighted, parse_line, parse_query, parse_weighted
from tests.support.cli import cli
from tests.support.images import noise_image
from tests.support.reference import reference_embeddings, reference_itm

TEXT, NOT, NOT2 = "a red circle left of a blue square", "two green triangles", "a yellow star above a red cross"


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("a beach", Weighted("a beach")),
        ("a beach::0.5", Weighted("a beach", 0.5)),
        ("ratio 2::x", Weighted("ratio 2::x")),  # not a number: part of the text
        (" padded ::2 ", Weighted("padded", 2.0)),
    ],
)
def test_parse_weighted(spec, expected):
    assert parse_weighted(spec) == expected


@pytest.mark.parametrize("spec", ["a::0", "a::-1", "a::nan", "a::inf", "::2"])
def test_bad_weights_are_usage_errors(spec):
    with pytest.raises(UsageError):
        parse_weighted(spec)


def test_line_syntax_equals_the_options_and_keeps_quotes():
    line = 'a dog\'s "red" ball --not grass::0.5 --like /x/a.jpg --unlike b.png --not sky'
    assert parse_line(line) == parse_query('a dog\'s "red" ball', ["grass::0.5", "sky"], ["/x/a.jpg"], ["b.png"])
    assert parse_line("plain text") == Terms(Weighted("plain text"))
    assert parse_line(line).label == 'a dog\'s "red" ball --not grass::0.5 --not sky --like /x/a.jpg --unlike b.png'
    with pytest.raises(UsageError):
        parse_line("--not grass")


def test_terms_that_cancel_are_a_usage_error():
    e = np.array([[1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(UsageError, match="cancel"):
        query_vector(e, np.array([1.0, -1.0]))


def _rgb(path):
    return Image.open(path).convert("RGB")


def test_no_rerank_vector_equals_numpy_over_reference_embeddings(tiny_checkpoint, engine, library):
    reader, _, paths, like = library
    images = [_rgb(p) for p in paths + [like]]
    image_refs, _ = reference_embeddings(tiny_checkpoint, images, [TEXT])
    _, text_refs = reference_embeddings(tiny_checkpoint, images[:1], [TEXT, NOT])
    expected = 2.0 * text_refs[0] - 0.5 * text_refs[1] + 0.75 * image_refs[-1]
    expected /= np.linalg.norm(expected)
    sims = image_refs[:-1] @ expected
    order = np.argsort(-sims, kind="stable")

    terms = parse_query(f"{TEXT}::2", [f"{NOT}::0.5"], [f"{like}::0.75"])
    (hits,) = Searcher(reader, engine).search([terms], top_k=8, rerank=False)
    assert [h.path for h in hits] == [paths[i] for i in order]
    np.testing.assert_allclose([h.similarity for h in hits], sims[order], atol=1e-4)
    assert hits[0].query == f"{TEXT}::2 --not {NOT}::0.5 --like {like}::0.75"
    plain = Searcher(reader, engine).search([TEXT], top_k=8, rerank=False)[0]
    assert [h.path for h in plain] != [h.path for h in hits], "the terms changed the ranking (else this proves little)"


def test_reranked_shortlist_leaves_the_negative_texts_to_itm(tiny_checkpoint, engine, library):
    """Reranked, the shortlist is the top N by cosine to the terms without the --not texts (those act through
    ITM); the similarity reported is the cosine to that vector."""
    reader, _, paths, like = library
    images = [_rgb(p) for p in paths + [like]]
    image_refs, text_refs = reference_embeddings(tiny_checkpoint, images, [TEXT] * len(images))
    vector = 2.0 * text_refs[0] + 0.75 * image_refs[-1]
    sims = image_refs[:-1] @ (vector / np.linalg.norm(vector))
    top3 = {paths[i]: sims[i] for i in np.argsort(-sims, kind="stable")[:3]}

    terms = parse_query(f"{TEXT}::2", [f"{NOT}::0.5"], [f"{like}::0.75"])
    (hits,) = Searcher(reader, engine).search([terms], top_k=3, shortlist=3)
    assert {h.path for h in hits} == set(top3)
    np.testing.assert_allclose([h.similarity for h in hits], [top3[h.path] for h in hits], atol=1e-4)
    (cosine_only,) = Searcher(reader, engine).search([terms], top_k=3, rerank=False)
    assert [h.similarity for h in cosine_only] != pytest.approx([top3[h.path] for h in cosine_only], abs=1e-4), (
        "without rerank the --not text shapes the vector (else this test proves little)"
    )


def test_negatives_in_rerank_multiply_by_one_minus_their_itm(tiny_checkpoint, engine, library):
    reader, _, paths, _ = library
    terms = parse_query(TEXT, [NOT, f"{NOT2}::2"])
    (hits,) = Searcher(reader, engine).search([terms], top_k=8, shortlist=8, score="itm")
    images = [_rgb(h.path) for h in hits]
    positive = reference_itm(tiny_checkpoint, images, TEXT)
    expected = (
        positive
        * (1 - reference_itm(tiny_checkpoint, images, NOT))
        * (1 - reference_itm(tiny_checkpoint, images, NOT2)) ** 2
    )
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert not np.allclose(expected, positive, atol=1e-3), "negatives changed the scores"
    # each hit carries that combined probability as `itm`, and the default blend ranks by it plus the cosine
    assert [h.itm for h in hits] == [h.score for h in hits]
    (blended,) = Searcher(reader, engine).search([terms], top_k=8, shortlist=8)
    assert {h.path: h.itm for h in blended} == {h.path: h.itm for h in hits}
    assert all(h.score == float(blend_scores(h.itm, h.similarity)) for h in blended)


def test_score_variants(engine, library):
    reader, _, _, _ = library
    searcher = Searcher(reader, engine)
    (itm,) = searcher.search([TEXT], top_k=8, shortlist=8, score="itm")
    (blend,) = searcher.search([TEXT], top_k=8, shortlist=8, score="blend")
    assert searcher.search([TEXT], top_k=8, shortlist=8)[0] == blend, "blend is the default (docs/performance.md)"
    (cosine,) = searcher.search([TEXT], top_k=8, shortlist=8, score="cosine")
    itm_by_path = {h.path: h for h in itm}
    expected = sorted(((float(blend_scores(h.score, h.similarity)), h.path) for h in itm), reverse=True)
    assert [h.path for h in blend] == [p for _, p in expected]
    np.testing.assert_allclose([h.score for h in blend], [s for s, _ in expected], atol=1e-6)
    assert all(abs(h.score - itm_by_path[h.path].score - h.similarity) < 1e-6 for h in blend)
    assert all(h.itm == itm_by_path[h.path].score == itm_by_path[h.path].itm for h in blend)
    assert all(h.itm is None for h in cosine)
    assert [h.path for h in cosine] == [h.path for h in searcher.search([TEXT], top_k=8, rerank=False)[0]]
    with pytest.raises(UsageError):
        searcher.search([TEXT], score="bogus")


def test_cli_queries_file_line_equals_the_options(library, tmp_path):
    _, index, _, like = library
    lines = tmp_path / "q.txt"
    lines.write_text(f"{TEXT} --not {NOT}::0.5 --like {like}\n")
    from_file = cli("query", "--queries-file", lines, "--no-rerank", "--index", index, "-k", "5")
    from_options = cli(
        "query", TEXT, "--not", f"{NOT}::0.5", "--like", like, "--no-rerank", "--index", index, "-k", "5"
    )
    assert from_file.exit_code == 0, from_file.stderr
    rows = [json.loads(line) for line in from_file.stdout.splitlines()]
    assert [r["path"] for r in rows] == [json.loads(line)["path"] for line in from_options.stdout.splitlines()]
    assert len(rows) == 5


def test_draft_decoding_of_rerank_candidates_keeps_itm_within_0_01(tmp_path):
    """Rerank decodes candidates in JPEG draft mode; on large JPEGs that must move ITM by at most 0.01."""
    from bt_search.media.images import load_pixels
    from bt_search.search.searcher import RERANK_DRAFT_DECODE
    from tests.support.paths import DEMO_MODEL

    assert RERANK_DRAFT_DECODE
    demo = load_engine(str(DEMO_MODEL), device="cpu")
    paths = []
    for i in range(4):
        path = tmp_path / f"big{i}.jpg"
        noise_image(950 + i, 200, 150).resize((1600, 1200), Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    full = np.stack([load_pixels(p, demo.preprocessing, draft=False)[0] for p in paths])
    draft = np.stack([load_pixels(p, demo.preprocessing, draft=True)[0] for p in paths])
    assert not np.array_equal(full, draft), "draft mode really decoded differently"
    for caption in ("a red circle left of a blue square", "three small blue circles in a row"):
        text = demo.text_states(caption)
        deltas = demo.itm_scores(text, demo.vision_states(full)) - demo.itm_scores(text, demo.vision_states(draft))
        assert np.abs(deltas).max() <= 0.01
