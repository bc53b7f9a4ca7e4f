"""Rerank pacing: the clock's arithmetic with a fake clock, and a budget through the Searcher."""

from __future__ import annotations

import pytest

from bt_search.errors import UsageError
from bt_search.search.rerank_budget import RerankClock, default_shortlist
from bt_search.search.searcher import Searcher

TEXT = "a red circle left of a blue square"  # any text: the budget, not the query, is under test


class FakeTime:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _drive(clock, fake, candidates_per_query, seconds_each, batch=16):
    reranked = []
    for query, total in enumerate(candidates_per_query):
        position = 0
        while position < total:
            size = clock.chunk_size(query, position, total - position, batch)
            if size == 0:
                clock.skip(total - position)
                break
            fake.t += size * seconds_each
            clock.record(size)
            position += size
        reranked.append(position)
    return reranked


def test_budget_reranks_what_fits_and_shares_it_over_queries():
    fake, notes = FakeTime(), []
    clock = RerankClock(40, 2, budget=10.0, on_note=notes.append, now=fake)
    # 2 s per candidate: query 0 may use 5 s (1 probe + 1 more), query 1 the rest of the 10 s.
    assert _drive(clock, fake, [20, 20], 2.0) == [2, 3]
    assert clock.skipped == 35
    assert "about 80 s" in notes[0] and "reranked 5 of 40" in clock.summary()


def test_no_budget_reranks_everything_and_announces_only_long_reranks():
    fake, notes = FakeTime(), []
    clock = RerankClock(20, 1, now=fake, on_note=notes.append)
    assert _drive(clock, fake, [20], 0.1) == [20]
    assert notes == [] and clock.summary() is None  # 2 s in all: not worth a line
    clock = RerankClock(20, 1, now=fake, on_note=notes.append)
    _drive(clock, fake, [20], 3.0)
    assert len(notes) == 1 and "about 60 s" in notes[0]


def test_every_query_reranks_at_least_one_candidate():
    fake = FakeTime()
    clock = RerankClock(6, 3, budget=0.001, now=fake)
    assert _drive(clock, fake, [2, 2, 2], 1.0) == [1, 1, 1]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_budgets_are_usage_errors(bad):
    with pytest.raises(UsageError):
        RerankClock(1, 1, budget=bad)


def test_default_shortlist_depends_on_the_device():
    assert default_shortlist("cuda") == 50 and default_shortlist("cpu") == 20 and default_shortlist("mps") == 20


def test_searcher_with_a_tiny_budget_keeps_the_best_cosine_candidate(
    engine, library
):  # `library`: tests/unit/search/conftest.py
    reader = library[0]
    notes = []
    searcher = Searcher(reader, engine, on_note=notes.append)
    (cut,) = searcher.search([TEXT], top_k=5, shortlist=6, rerank_budget=1e-9)
    (full,) = searcher.search([TEXT], top_k=5, shortlist=6, rerank_budget=1e9)
    (cosine,) = searcher.search([TEXT], top_k=5, rerank=False)
    assert [h.path for h in cut] == [cosine[0].path]
    assert [h.path for h in full] == [h.path for h in searcher.search([TEXT], top_k=5, shortlist=6)[0]]
    assert any("reranked 1 of 6" in n for n in notes)
