"""The attach fast path's argument parser (cli/attach.py) against the typer `query` command it stands in for:
every option is either read the way typer reads it or left to typer. (End to end through a real server:
test_serve.py.)"""

from __future__ import annotations

import io

import pytest
from typer.main import get_command

from bt_search.cli import attach
from bt_search.cli.app import app
from bt_search.cli.options import QUERY_DEFAULTS, QUERY_OPTIONS

COMMAND = get_command(app).commands["query"]
PARAMS = {param.name: param for param in COMMAND.params}


def typer_reads(argv: list[str]) -> dict:
    """The parameter values typer hands cli.query for `bt-search query ARGV` (no texts: cli.query reads [])."""
    params = COMMAND.make_context("query", list(argv)).params
    return {**params, "texts": list(params["texts"] or [])}


def test_the_typer_command_and_the_fast_parser_read_one_option_table():
    declared = {opt for param in COMMAND.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("-")}
    assert declared == {flag for option in QUERY_OPTIONS for flag in option.flags}
    fast = set(attach.VALUE_OPTIONS) | set(attach.FLAGS)
    assert fast == {flag for option in QUERY_OPTIONS if option.light for flag in option.flags}
    assert {name for name, param in PARAMS.items() if param.envvar} == {
        option.name for option in QUERY_OPTIONS if option.envvar
    }


def test_each_fast_option_fills_the_typer_parameter_it_names_with_its_default():
    for spelling, (field, _) in attach.VALUE_OPTIONS.items():
        repeatable = isinstance(QUERY_DEFAULTS[field], list)
        assert spelling in PARAMS[field].opts and not PARAMS[field].is_flag, spelling
        assert PARAMS[field].multiple == repeatable, spelling
    for spelling, field in attach.FLAGS.items():
        assert spelling in PARAMS[field].opts and PARAMS[field].is_flag, spelling
    assert QUERY_DEFAULTS == typer_reads([])
    # An environment variable typer reads for `query` sends the call to typer whenever it is set.
    assert {param.envvar for param in COMMAND.params if param.envvar} <= set(attach.SLOW_ENVVARS)


READ_ALIKE = [
    ["a cat"],
    ["a cat", "--top-k=3", "-n", "7", "--no-rerank", "b dog", "--threshold", "0.25", "-f", "csv", "-0", "-q"],
    ["--queries-file", "-", "--index", "~/idx", "--model", "", "--device", "cpu", "--precision", "bf16", "-k", "007"],
    ["--image", "./photos/../x.png", "--under", "photos/", "--format=tsv", "--batch-size", "4", "--threshold=-1e-3"],
    ["--null", "--quiet", "x", "--shortlist=20", "--threshold", ".5", "y", "--format", "table", "--model=m"],
    ["x", "--not", "dogs", "--not=cats::2", "--like", "a.png", "--unlike", "b.png", "--sort", "date", "--score", "itm"],
    ["x", "--after", "2021-01-01", "--before=2021-12-31", "--rerank-budget", "2.5", "--sort=relevance"],
]


@pytest.mark.parametrize("argv", READ_ALIKE, ids=lambda argv: " ".join(argv)[:40])
def test_what_the_fast_parser_reads_is_what_typer_reads(argv):
    fast, typer = attach.parse_args(argv), typer_reads(argv)
    assert fast is not None
    assert fast == {field: typer[field] for field in fast}


LEFT_TO_TYPER = [
    ["x", "--html", "out.html"],  # an option only the full CLI handles
    ["x", "--no-server"],
    ["x", "--help"],
    ["x", "-k5"],  # glued short option
    ["x", "-qk", "5"],  # bundled flags
    ["x", "-k", "2", "-k", "3"],  # repeated
    ["--", "-x"],  # end of options
    ["-"],
    ["x", "--top-k", "0"],  # typer's min=1 refuses it: its message
    ["x", "--top-k", "+3"],
    ["x", "--threshold", "nan"],
    ["x", "--threshold", "1_0"],
    ["x", "--index", "-q"],  # a value that looks like an option
    ["x", "--no-rerank=yes"],
    ["x", "--top-k"],  # value missing
    ["x", "--unknown"],
]


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=lambda argv: " ".join(argv)[:40])
def test_unusual_arguments_are_left_to_typer(argv):
    assert attach.parse_args(argv) is None


def test_no_server_environment_variable_is_left_to_typer(monkeypatch):
    monkeypatch.setenv("BT_SEARCH_NO_SERVER", "0")  # however typer reads the value, it decides
    assert attach.attached_query(["a cat"]) is None


def test_stdin_read_by_the_fast_path_is_read_again_by_typer_when_no_server_answers(tmp_path, monkeypatch):
    lines = b"a red circle\ntwo green triangles\n"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines)))
    assert attach.attached_query(["--queries-file", "-", "--index", str(tmp_path / "no-index")]) is None
    from bt_search.cli.query_input import read_queries

    assert read_queries("-") == ["a red circle", "two green triangles"]
