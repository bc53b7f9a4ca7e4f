"""Each output format must read back to exactly the hits that went in."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator

import pytest

from bt_search.errors import EXIT_USAGE, UsageError
from bt_search.output.formats import FORMATS, default_format
from bt_search.output.hits import COLUMNS, render, write_query_output
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
        Hit(
            query=query,
            rank=i,
            path=p,
            score=1 / (i + 2),
            similarity=0.1 * i - 0.05,
            shortlist_rank=9 - i,
            itm=1 / (i + 3) if i % 2 else None,  # some reranked, some not: a float and an empty field
            t=2.5 * i if i % 3 == 0 else None,  # some video frames (seconds), some still images
        )
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
        "" if hit.itm is None else repr(hit.itm),
        "" if hit.t is None else repr(hit.t),
        str(len(hit.duplicates)),
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

    hit = Hit("q", 1, "/a.jpg", score=FloatLike(0.5), similarity=FloatLike(0.25), shortlist_rank=3, itm=FloatLike(0.75))
    assert json.loads(rendered([hit], "jsonl")) == {
        "query": "q",
        "rank": 1,
        "path": "/a.jpg",
        "score": 0.5,
        "similarity": 0.25,
        "shortlist_rank": 3,
        "taken_at": None,
        "itm": 0.75,
        "t": None,
        "duplicates": [],
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
    expected = f"cat\t1\t/photos/a b.jpg\t{hit.score!r}\t{hit.similarity!r}\t8\t\t{hit.itm!r}\t\t0\n"
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
    for header in ("rank", "score", "similarity", "path"):
        assert header in text
    assert "/photos/cat.jpg" in text
    assert "[bold]x[/bold]" in text  # shown literally, not eaten as rich markup
    assert f"{hits[0].score:.4f}" in text and f"{hits[1].similarity:.4f}" in text
    assert "\x1b[" not in text  # no colour codes when the stream is not a terminal


def test_table_without_header():
    text = rendered(make_hits(["/photos/cat.jpg"], query="cats"), "table", include_header=False)
    assert "/photos/cat.jpg" in text and "similarity" not in text


class Terminal(io.StringIO):
    """stdout as write_query_output reconfigures it."""

    def reconfigure(self, **kwargs) -> None:
        pass


def table_at_80_columns(monkeypatch, results) -> list[str]:
    monkeypatch.setenv("COLUMNS", "80")
    out = Terminal()
    write_query_output(results, "table", out)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    return lines


def headers(lines: list[str]) -> list[list[str]]:
    return [line.split() for line in lines if line.split()[:1] == ["rank"]]


def test_table_titles_each_query_once_and_keeps_paths_whole_at_80_columns(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    query = "a yellow square below a blue triangle"
    near = [str(tmp_path / "Pictures" / "2021" / f"summer holiday/IMG_{i:04d}_a_long_file_name.jpg") for i in (1, 2)]
    far = [f"/srv/archive/photos/{'x' * 40}/IMG_{i:04d}.jpg" for i in (1, 2)]
    longest = "/mnt/nas/" + "/".join(["folder_with_a_long_name"] * 4) + "/IMG_0001.jpg"  # over 80 characters
    results = [
        [Hit(query, i, path, 1.2 - i / 10, 0.3, i, itm=0.9 - i / 10) for i, path in enumerate(near, start=1)],
        [Hit("red car", i, path, 0.5, 0.3, i, itm=0.2) for i, path in enumerate([*far, longest], start=1)],
    ]
    lines = table_at_80_columns(monkeypatch, results)
    text = "\n".join(lines)
    assert "query" not in text and text.count(query) == 1 and lines.count("red car") == 1  # a title per query
    for path in near:  # shorter relative to the current directory, and whole on one line
        assert os.path.relpath(path) in lines
    for path in far:  # absolute where that is shorter; whole, though the row cannot hold it beside the numbers
        assert path in lines and os.path.relpath(path) not in text
    folded = [line for line in lines if line.startswith("/mnt/nas/")]
    assert len(folded) == 1 and len(folded[0]) == 80 and longest.startswith(folded[0])  # folds only when longer
    assert "".join(lines[lines.index(folded[0]) : lines.index(folded[0]) + 2]) == longest


def test_table_puts_short_paths_beside_their_numbers(monkeypatch):
    hits = [Hit("cats", 1, "/photos/cat.jpg", 1.3, 0.4, 2, itm=0.9)]
    lines = table_at_80_columns(monkeypatch, [hits])
    assert headers(lines) == [["rank", "score", "itm", "similarity", "path"]]
    assert lines[-1].split() == ["1", "1.3000", "0.9000", "0.4000", "/photos/cat.jpg"]


def test_table_shows_a_video_frames_time_and_paths_the_video_alone(monkeypatch):
    hits = [Hit("cats", 1, "/v/clip.mp4", 0.4, 0.4, 1, t=12.5), Hit("cats", 2, "/p/cat.jpg", 0.3, 0.3, 2)]
    lines = table_at_80_columns(monkeypatch, [hits])
    assert headers(lines) == [["rank", "similarity", "t", "path"]]
    assert lines[-2].split() == ["1", "0.4000", "12.5s", "/v/clip.mp4"] and lines[-1].split()[-1] == "/p/cat.jpg"
    assert rendered(hits, "paths") == "/v/clip.mp4\n/p/cat.jpg\n"


@pytest.mark.parametrize(
    ("score", "itm", "columns"),
    [
        (0.4, None, ["rank", "similarity", "path"]),  # not reranked: the score is the cosine
        (0.9, 0.9, ["rank", "itm", "similarity", "path"]),  # score="itm"
        (1.3, 0.9, ["rank", "score", "itm", "similarity", "path"]),  # the blend: score = itm + cosine
    ],
)
def test_table_shows_no_column_twice(monkeypatch, score, itm, columns):
    hits = [Hit("cats", rank, f"/p/{rank}.jpg", score, 0.4, rank, itm=itm) for rank in (1, 2)]
    assert headers(table_at_80_columns(monkeypatch, [hits])) == [columns]


def test_table_keeps_carriage_returns_visible():
    out = io.StringIO()
    render([Hit("cats", 1, "/photos/cr\rname.jpg", 0.5, 0.25, 1)], "table", out)
    assert "cr\\rname.jpg" in out.getvalue()
