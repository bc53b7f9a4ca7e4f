"""Query filters and term weights at the edges: any YYYY-MM-DD day works, other spellings are refused, and a
weight too large to keep the other terms alive is refused instead of zeroing every score."""

from __future__ import annotations

import pyarrow as pa
import pytest

from bt_search.errors import UsageError
from bt_search.search.filters import date_filter, parse_day
from bt_search.search.terms import MAX_WEIGHT, parse_line, parse_query

ROWS = pa.table(
    {
        "taken_at": ["2021-07-04T10:11:12", None, None],
        "mtime_ns": [0, 1_600_000_000 * 10**9, -(2**62)],  # 2020, and a file dated long before 1970
    }
)


def matching(after: str | None, before: str | None) -> int:
    return ROWS.filter(date_filter(parse_day(after, "after"), parse_day(before, "before"))).num_rows


@pytest.mark.parametrize(
    "after, before, expected",
    [
        ("2300-01-01", None, 0),
        (None, "9999-12-31", 3),
        ("0001-01-01", None, 3),
        ("0001-01-01", "9999-12-31", 3),
        ("2021-01-01", "2021-12-31", 1),
    ],
)
def test_any_day_from_year_1_to_9999_filters_without_overflow(after, before, expected):
    assert matching(after, before) == expected


@pytest.mark.parametrize("spelling", ["20210101", "2021-W01-1", "2021-1-1", "2021-01-01T00:00", " 2021-01-01"])
def test_only_the_documented_day_spelling_is_accepted(spelling):
    with pytest.raises(UsageError, match="`after` takes a date as YYYY-MM-DD"):
        parse_day(spelling, "after")


@pytest.mark.parametrize("weight", ["1e200", "101", "inf", "0", "-1"])
def test_weights_outside_the_range_are_refused(weight):
    with pytest.raises(UsageError, match="at most"):
        parse_query(f"red circle::{weight}", nots=["blue::1"])
    with pytest.raises(UsageError, match="at most"):
        parse_query("red circle", nots=[f"blue::{weight}"])


def test_the_largest_weight_is_accepted():
    terms = parse_query(f"red circle::{MAX_WEIGHT:g}", nots=[f"blue::{MAX_WEIGHT:g}"])
    assert terms.text.weight == terms.nots[0].weight == MAX_WEIGHT


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_negative_or_example_is_refused(empty):
    for option in ("nots", "likes", "unlikes"):
        with pytest.raises(UsageError, match=f"`{option}` holds an empty term"):
            parse_query("red circle", **{option: [empty]})
    with pytest.raises(UsageError, match="needs a value"):
        parse_line("red circle --not  ")
