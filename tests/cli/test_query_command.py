"""`bt-search query` and `eval` as scripts use them: formats that parse back, stdin, failures, exit codes.

A `python -m bt_search` child costs seconds of imports (torch, transformers), so real processes run where the
process is the point (a pipe's default format, NUL bytes on a pipe, stdin, warnings printed by libraries,
exit codes of failures); checks of what the command computes run the same typer app in-process."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.support.checkpoints import SPECS
from tests.support.cli import bt_search, cli, cli_index
from tests.support.images import noise_image

QUERY = "two green triangles"


@pytest.fixture(scope="module")
def index(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("query")
    photos = root / "photos"
    photos.mkdir()
    names = ["plain.png", "with space.png", "new\nline.png", 'comma, "quote".png', "ünïcödé.png", "tab\there.png"]
    for i, name in enumerate(names):
        noise_image(300 + i, 64, 64).save(photos / name)
    cli_index([photos], root / "index", tiny_checkpoint, "--quiet")
    return root / "index", photos, names


# The tiny random checkpoint sees these noise images as near-duplicates of one another (docs/performance.md,
# "Near-duplicates"): the tests here count hits, so their queries show every hit on its own (--no-fold).


def query(index, *args, **kwargs):
    """`bt-search query ARGS --no-fold` in a subprocess."""
    return bt_search("query", *args, "--index", index[0], "--no-fold", **kwargs)


def query_here(index, *args, **kwargs):
    """`bt-search query ARGS --no-fold` in-process; asserts it succeeded."""
    result = cli("query", *args, "--index", index[0], "--no-fold", **kwargs)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def test_jsonl_is_the_default_when_piped_and_parses(index):
    result = query(index, QUERY, "--top-k", "3")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3] and {r["query"] for r in rows} == {QUERY}
    assert all(0.0 <= r["score"] <= 1.0 and -1.0 <= r["similarity"] <= 1.0 for r in rows)
    assert rows == sorted(rows, key=lambda r: -r["score"])


def test_csv_and_tsv_round_trip_awkward_names(index):
    for fmt, delimiter in (("csv", ","), ("tsv", "\t")):
        result = query_here(index, QUERY, "--top-k", "6", "--format", fmt)
        rows = list(csv.DictReader(io.StringIO(result.stdout, newline=""), delimiter=delimiter))
        assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == sorted(index[2])
        assert list(rows[0]) == [
            *("query", "rank", "path", "score", "similarity", "shortlist_rank", "taken_at", "itm", "t", "duplicates")
        ]
        # the default blend: each row says what the ITM head answered, the score adds the cosine to it
        assert all(abs(float(r["score"]) - float(r["itm"]) - float(r["similarity"])) < 1e-6 for r in rows)


def test_paths_null_separated_survive_newlines(index):
    result = query(index, QUERY, "--top-k", "6", "--format", "paths", "-0")
    paths = result.stdout.split("\0")
    assert paths[-1] == "" and sorted(p.rsplit("/", 1)[1] for p in paths[:-1]) == sorted(index[2])
    refused = cli("query", QUERY, "--top-k", "6", "--format", "paths", "--index", index[0])
    assert refused.exit_code == 2 and "-0" in refused.stderr


def test_queries_from_stdin_in_input_order_equal_single_runs(index):
    queries = ["a red circle", QUERY, "a photo of two cats"]
    batch = query(index, "--queries-file", "-", "--top-k", "2", input="\n".join(queries) + "\n\n")
    rows = [json.loads(line) for line in batch.stdout.splitlines()]
    assert [r["query"] for r in rows] == [q for q in queries for _ in range(2)]
    for q in queries:  # the single runs in-process: the batch from stdin is what needs a process
        alone = [json.loads(line) for line in query_here(index, q, "--top-k", "2").stdout.splitlines()]
        assert [(r["path"], round(r["score"], 5)) for r in alone] == [
            (r["path"], round(r["score"], 5)) for r in rows if r["query"] == q
        ]


def test_no_rerank_scores_are_cosines(index):
    rows = [json.loads(line) for line in query_here(index, QUERY, "--no-rerank", "-k", "3").stdout.splitlines()]
    assert all(r["score"] == r["similarity"] for r in rows) and [r["shortlist_rank"] for r in rows] == [1, 2, 3]
    assert all(r["itm"] is None for r in rows)  # not reranked: no ITM probability


def test_similar_images_by_image(index):
    target = index[1] / "plain.png"
    rows = [json.loads(line) for line in query_here(index, "--image", target, "-k", "2").stdout.splitlines()]
    assert rows[0]["path"] == str(target) and rows[0]["similarity"] == pytest.approx(1.0, abs=1e-4)


LONG_QUERY = " ".join(["word"] * 2000)


def test_long_query_is_truncated_with_one_warning(index):
    # A subprocess: the tokenizer's own "Token indices" warning goes to the real stderr, past CliRunner.
    result = query(index, LONG_QUERY, "-k", "1")
    assert result.returncode == 0 and "truncated" in result.stderr and len(result.stdout.splitlines()) == 1
    assert result.stderr.count("truncated") == 1 and "Token indices" not in result.stderr


def test_quiet_silences_the_long_query_warnings(index):
    quiet = query(index, LONG_QUERY, "-k", "1", "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and len(quiet.stdout.splitlines()) == 1


def test_byte_order_mark_is_not_part_of_the_first_query(index, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_bytes("\ufeffa red circle\ntwo green triangles\n".encode("utf-8"))
    result = cli("query", "--queries-file", queries, "--index", index[0], "--no-rerank", "-k", "3", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    plain = cli(
        "query", "a red circle", "two green triangles", "--index", index[0], "--no-rerank", "-k", "3", "-f", "jsonl"
    )
    assert rows == [json.loads(line) for line in plain.stdout.splitlines()]  # same queries, same scores
    assert {r["query"] for r in rows} == {"a red circle", "two green triangles"}


def test_non_utf8_queries_are_usage_errors(index, tmp_path):
    latin1 = "café au lait\n".encode("latin-1")
    (tmp_path / "q.txt").write_bytes(latin1)
    from_file = cli("query", "--queries-file", tmp_path / "q.txt", "--index", index[0], "--no-rerank")
    from_stdin = cli("query", "--queries-file", "-", "--index", index[0], "--no-rerank", input=latin1)
    # On POSIX, argv bytes that are not UTF-8 arrive as lone surrogates (surrogateescape).
    from_argv = cli("query", latin1.rstrip().decode("utf-8", "surrogateescape"), "--index", index[0], "--no-rerank")
    for result in (from_file, from_stdin, from_argv):
        assert result.exit_code == 2, result.stderr
        assert "UTF-8" in result.stderr and "internal error" not in result.stderr


def test_an_unknown_format_is_refused_before_the_model_loads(index, tmp_path):
    result = cli("query", "cats", "-f", "bogus", "--index", index[0], "--model", tmp_path / "no-such-model")
    assert result.exit_code == 2 and "bogus" in result.stderr


def test_a_nan_threshold_is_a_usage_error(index):
    result = cli("query", QUERY, "--no-rerank", "--threshold", "nan", "--index", index[0])
    assert result.exit_code == 2, result.stderr
    assert "finite" in result.stderr


@pytest.mark.parametrize(
    "case,expected_code,message",
    [
        ("missing index", 1, "no index at"),
        ("empty query", 2, "empty query"),
        ("no query", 2, "no query"),
        ("bad format version", 1, "format"),
        ("other model", 1, "built with"),
    ],
)
def test_failures_get_one_clear_line_and_an_exit_code(case, expected_code, message, index, checkpoints, tmp_path):
    import shutil

    args = [QUERY, "--index", index[0]]
    if case == "missing index":
        args = [QUERY, "--index", tmp_path / "none"]
    elif case == "empty query":
        args = ["", "--index", index[0]]
    elif case == "no query":
        args = ["--index", index[0]]
    elif case == "bad format version":
        broken = tmp_path / "index"
        shutil.copytree(index[0], broken)
        manifest = json.loads((broken / "manifest.json").read_text())
        manifest["format_version"] = 99
        (broken / "manifest.json").write_text(json.dumps(manifest))
        args = [QUERY, "--index", broken]
    elif case == "other model":
        args += ["--model", checkpoints[SPECS[1].name]]
    result = bt_search("query", *args)
    assert result.returncode == expected_code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_deleted_file_is_reported_on_stderr_and_skipped(index, tmp_path):
    import shutil

    victim = index[1] / "plain.png"
    shutil.move(victim, tmp_path / "away.png")
    try:
        result = query_here(index, QUERY, "-k", "6")
    finally:
        shutil.move(tmp_path / "away.png", victim)
    assert result.exit_code == 0 and str(victim) in result.stderr
    assert len(result.stdout.splitlines()) == 5
