"""Each output format must read back to exactly the hits that went in."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest

from bt_search.errors import EXIT_USAGE, UsageError
from bt_search.output.formats import FORMATS, default_format
from bt_search.output.hits import COLUMNS, render
from bt_search.search.hits import Hit

AWKWARD_NAMES = [
    "/photos/plain.jpg",
    "/photos/comma, in name.jpg",
    '/photos/"quoted" name.png',
    "/photos/tab\there.jpg",
    "/photos/new\nline.jpg",
    "/photos/carriage\rreturn.jpg",
    "/photos/ünïcödé 猫 🐈.webp",
    "/photos/[bold]markup[/bold].jpg",
]


def make_hits(paths: list[str], query: str = 'two "cats", one\ttab') -> list[Hit]:
    return [
        Hit(query=query, rank=i, path=p, score=1 / (i + 2), similarity=0.1 * i - 0.05, shortlist_rank=9 - i)
        for i, p in enumerate(paths, start=1)
    ]


def rendered(hits, fmt: str, **kwargs) -> str:
    out = io.StringIO(newline="")  # keep "\r" as written, as a binary pipe would
    render(hits, fmt, out, **kwargs)
    return out.getvalue()


def as_row(hit: Hit) -> list[str]:
    numbers = [
        str(hit.rank),
        hit.path,
        repr(hit.score),
        repr(hit.similarity),
        str(hit.shortlist_rank),
        hit.taken_at or "",
    ]
    return [hit.query, *numbers]


def test_formats_listed():
    assert FORMATS == ("table", "jsonl", "csv", "tsv", "paths")


@pytest.mark.parametrize(("tty", "expected"), [(True, "table"), (False, "jsonl")])
def test_default_format(tty, expected):
    assert default_format(tty) == expected


def test_jsonl_round_trips():
    hits = make_hits(AWKWARD_NAMES)
    lines = rendered(hits, "jsonl").split("\n")
    assert lines[-1] == ""  # newline-terminated, one object per line
    records = [json.loads(line) for line in lines[:-1]]
    assert [Hit(**r) for r in records] == hits
    assert list(records[0]) == list(COLUMNS)
    assert type(records[0]["score"]) is float and type(records[0]["rank"]) is int


def test_jsonl_keeps_unicode_readable():
    text = rendered(make_hits(["/p/猫.jpg"]), "jsonl")
    assert "猫" in text and "\\u" not in text


def test_jsonl_converts_numpy_like_scalars():
    class FloatLike(float):  # stands in for numpy.float32, which json cannot serialise
        pass

    hit = Hit("q", rank=1, path="/a.jpg", score=FloatLike(0.5), similarity=FloatLike(0.25), shortlist_rank=3)
    assert json.loads(rendered([hit], "jsonl")) == {
        "query": "q",
        "rank": 1,
        "path": "/a.jpg",
        "score": 0.5,
        "similarity": 0.25,
        "shortlist_rank": 3,
        "taken_at": None,
    }


@pytest.mark.parametrize(("fmt", "delimiter"), [("csv", ","), ("tsv", "\t")])
def test_delimited_round_trips(fmt, delimiter):
    hits = make_hits(AWKWARD_NAMES)
    rows = list(csv.reader(io.StringIO(rendered(hits, fmt), newline=""), delimiter=delimiter))
    assert rows[0] == list(COLUMNS)
    assert rows[1:] == [as_row(h) for h in hits]
    assert [float(r[3]) for r in rows[1:]] == [h.score for h in hits]  # exact floats


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_delimited_without_header_for_later_queries(fmt):
    first, second = make_hits(["/a.jpg"], query="cats"), make_hits(["/b.jpg"], query="dogs")
    out = io.StringIO(newline="")
    render(first, fmt, out)
    render(second, fmt, out, include_header=False)
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline=""), delimiter="," if fmt == "csv" else "\t"))
    assert rows == [list(COLUMNS), as_row(first[0]), as_row(second[0])]


def test_tsv_plain_names_are_not_quoted():
    hit = make_hits(["/photos/a b.jpg"], query="cat")[0]
    expected = f"cat\t1\t/photos/a b.jpg\t{hit.score!r}\t{hit.similarity!r}\t8\t\n"
    assert rendered([hit], "tsv", include_header=False) == expected


@pytest.mark.parametrize(("fmt", "delimiter"), [("csv", ","), ("tsv", "\t")])
def test_delimited_lines_end_in_lf_and_quote_as_rfc_4180(fmt, delimiter):
    hits = make_hits(AWKWARD_NAMES)
    text = rendered(hits, fmt)
    assert "\r\n" not in text and text.endswith("\n")
    # the csv module's RFC 4180 dialect, line ends aside: the same fields quoted the same way
    reference = io.StringIO(newline="")
    writer = csv.writer(reference, delimiter=delimiter)
    writer.writerow(COLUMNS)
    writer.writerows(as_row(hit) for hit in hits)
    assert text == reference.getvalue().replace("\r\n", "\n")


def test_tsv_fields_cut_cleanly():
    hit = Hit("cats", 1, "/photos/a.jpg", 0.5, 0.25, 1, taken_at="2021-07-04T10:11:12+02:00")
    line = rendered([hit], "tsv", include_header=False)
    assert line.rstrip("\n").split("\t")[6] == "2021-07-04T10:11:12+02:00"  # what `cut -f7` prints


def test_paths_newline_mode():
    names = ["/a.jpg", "/b c.jpg", "/猫.png"]
    assert rendered(make_hits(names), "paths") == "/a.jpg\n/b c.jpg\n/猫.png\n"


def test_paths_null_separated_keeps_newlines_in_names():
    text = rendered(make_hits(AWKWARD_NAMES), "paths", null_separated=True)
    assert text.endswith("\0")
    assert text.split("\0")[:-1] == AWKWARD_NAMES


@pytest.mark.parametrize("bad", ["/photos/new\nline.jpg", "/photos/cr\rname.jpg"])
def test_paths_newline_mode_refuses_line_breaks(bad):
    with pytest.raises(UsageError, match="`null_separated=True`") as err:
        rendered(make_hits(["/ok.jpg", bad]), "paths")
    assert err.value.exit_code == EXIT_USAGE


def test_null_separated_only_for_paths():
    with pytest.raises(UsageError, match="paths"):
        rendered(make_hits(["/a.jpg"]), "jsonl", null_separated=True)


def test_unknown_format():
    with pytest.raises(UsageError, match="table, jsonl, csv, tsv, paths"):
        rendered([], "xml")


def test_streams_while_hits_arrive():
    out = io.StringIO()
    seen: list[str] = []

    def hits() -> Iterator[Hit]:
        for hit in make_hits(["/a.jpg", "/b.jpg", "/c.jpg"]):
            seen.append(out.getvalue())  # what was written before this hit was produced
            yield hit

    render(hits(), "paths", out)
    assert seen == ["", "/a.jpg\n", "/a.jpg\n/b.jpg\n"]


def test_table_shows_values_and_literal_paths():
    hits = make_hits(["/photos/cat.jpg", "/p/[bold]x[/bold].jpg"], query="cats")
    text = rendered(hits, "table")
    for header in ("query", "rank", "score", "similarity", "path"):
        assert header in text
    assert "/photos/cat.jpg" in text
    assert "[bold]x[/bold]" in text  # shown literally, not eaten as rich markup
    assert f"{hits[0].score:.4f}" in text and f"{hits[1].similarity:.4f}" in text
    assert "\x1b[" not in text  # no colour codes when the stream is not a terminal


def test_table_without_header():
    text = rendered(make_hits(["/photos/cat.jpg"], query="cats"), "table", include_header=False)
    assert "/photos/cat.jpg" in text and "similarity" not in text


def test_table_keeps_carriage_returns_visible():
    out = io.StringIO()
    render([Hit("cats", 1, "/photos/cr\rname.jpg", 0.5, 0.25, 1)], "table", out)
    assert "cr\\rname.jpg" in out.getvalue()
