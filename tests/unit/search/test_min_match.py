"""`min_match`: hits kept by their ITM probability in every score mode, refusals where no ITM is computed, and
`query`'s exit status 6 when nothing is left (in-process; served in tests/e2e/test_serve_process.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bt_search.cli.app import app
from bt_search.errors import EXIT_NO_MATCH, EXIT_USAGE, UsageError
from bt_search.search.match import check_min_match
from bt_search.search.query import QueryRequest, run_query
from bt_search.search.searcher import Searcher

QUERY = "two green triangles"


@pytest.mark.parametrize(
    ("min_match", "options", "named"),
    [
        (1.5, {}, "`min_match` must be a probability"),
        (float("nan"), {}, "`min_match` must be a probability"),
        (0.5, {"image": True}, "not to `image`"),
        (0.5, {"rerank": False}, "which `rerank=False` does not compute"),
    ],
)
def test_refused_before_any_model_loads(min_match, options, named):
    with pytest.raises(UsageError) as refused:
        check_min_match(min_match, **options)
    assert named in str(refused.value)
    if not options.get("image"):  # QueryRequest.check (before the model loads) asks the same
        with pytest.raises(UsageError):
            QueryRequest(queries=(QUERY,), min_match=min_match, rerank=options.get("rerank", True)).check()


@pytest.mark.parametrize("score", ["blend", "itm", "cosine"])
def test_keeps_exactly_the_hits_at_or_above_p_in_every_score_mode(engine, library, score):
    reader, _, _, _ = library
    searcher = Searcher(reader, engine, batch_size=4)
    (everything,) = searcher.search([QUERY], top_k=8, shortlist=8, score="itm")
    itms = sorted(h.itm for h in everything)
    p = (itms[3] + itms[4]) / 2  # half of the eight above it
    request = QueryRequest(queries=(QUERY,), top_k=8, shortlist=8, score=score, min_match=p, fold=False)
    (kept,) = run_query(searcher, request)
    assert {h.path for h in kept} == {h.path for h in everything if h.itm >= p} and len(kept) == 4
    key = {"blend": lambda h: h.itm + h.similarity, "itm": lambda h: h.itm, "cosine": lambda h: h.similarity}[score]
    assert [h.path for h in kept] == [h.path for h in sorted(kept, key=key, reverse=True)]
    assert [h.rank for h in kept] == [1, 2, 3, 4] and all(h.itm >= p for h in kept)


def test_query_exit_status_says_no_match(library, tiny_checkpoint):
    _, index, _, _ = library
    base = ["query", QUERY, "--index", str(index), "--no-server", "-f", "jsonl", "-k", "3"]
    answered = CliRunner().invoke(app, [*base, "--min-match", "0"])
    assert answered.exit_code == 0 and len(answered.stdout.splitlines()) == 3
    assert all(json.loads(line)["itm"] >= 0 for line in answered.stdout.splitlines())
    refused = CliRunner().invoke(app, [*base, "--min-match", "1"])
    assert refused.exit_code == EXIT_NO_MATCH == 6 and refused.stdout == ""
    no_rerank = CliRunner().invoke(app, [*base, "--min-match", "0.5", "--no-rerank"])
    assert no_rerank.exit_code == EXIT_USAGE and "--min-match" in no_rerank.stderr and "--no-rerank" in no_rerank.stderr
