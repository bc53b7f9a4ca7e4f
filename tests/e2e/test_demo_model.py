"""The shipped demo model reproduces its card's numbers, and README's quickstart works on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bt_search.engine.loading import load_engine
from bt_search.search.evaluate import evaluate, read_captions
from bt_search.search.searcher import Searcher
from bt_search.store import IndexReader
from tests.support.cli import bt_search, cli_index
from tests.support.paths import DEMO_MODEL, REPO_ROOT, SAMPLE_IMAGES
from tests.support.readme import readme_quickstart

ROOT = REPO_ROOT
SAMPLES = SAMPLE_IMAGES
TOLERANCE = 0.01  # recall over 240 captions moves in steps of 1/240; allow float noise across machines


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    """README's quickstart index (`bt-search index sample_data/images --model sample_data/demo-model`), built
    once by the CLI in-process: the card's numbers and the quickstart's query both read it."""
    index = tmp_path_factory.mktemp("demo") / "index"
    cli_index([SAMPLES], index, DEMO_MODEL, "--quiet")
    reader = IndexReader.open(index)
    assert reader.failed() == [] and len(reader) == len(read_captions(SAMPLES / "captions.csv"))
    return reader, load_engine(str(DEMO_MODEL), device="cpu"), index


def test_shipped_model_reproduces_its_card(demo_index):
    reader, engine, _ = demo_index
    card = json.loads((DEMO_MODEL / "eval.json").read_text())
    report = evaluate(
        Searcher(reader, engine), read_captions(SAMPLES / "captions.csv"), shortlist=card["shortlist_size"]
    )
    measured = report.as_dict()
    assert measured["captions"] == card["captions"]
    for ranking in ("shortlist_recall", "reranked_recall"):
        for k, value in card[ranking].items():
            assert measured[ranking][k] == pytest.approx(value, abs=TOLERANCE), (ranking, k)
    card_text = (DEMO_MODEL / "README.md").read_text()
    assert f"{card['reranked_recall']['R@5']:.3f}" in card_text, "the card's table shows the measured numbers"


def test_readme_quickstart_query_finds_the_image_readme_names(demo_index):
    query, expected = readme_quickstart()
    captions = {Path(c.path).name: c.text for c in read_captions(SAMPLES / "captions.csv")}
    assert captions[Path(expected).name] == query, "README's query is that image's own caption: an exact answer"
    index = ["--index", demo_index[2]]
    found = bt_search("query", query, "--top-k", "5", "-f", "jsonl", *index)  # as README's shell runs it
    rows = [json.loads(line) for line in found.stdout.splitlines()]
    assert found.returncode == 0 and len(rows) == 5
    assert all(Path(r["path"]).parent == SAMPLES for r in rows)
    assert rows[0]["path"] == str(ROOT / expected)
