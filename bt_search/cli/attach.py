"""`bt-search query` answered by a running server without loading the full CLI: the attach fast path.

Through a warm server a query is one HTTP round trip, and importing typer (which builds pydantic adapters)
and rich would cost more than all the rest. So the console script starts in launcher.py, which offers
`query` arguments to `attached_query` first. It reads the common options with a small parser (standard
library only), asks the server through client.py and prints with output.py, the renderers the full CLI uses.

Whenever it is not sure, it returns None before printing anything, and the full CLI runs exactly as it
would without it: an option it leaves to the CLI (SLOW_OPTIONS, `--help`), an unusual spelling (`-k5`,
a repeated option, a value starting with "-"), a value the CLI would refuse, no matching server, an error
answered by the server, or files the search reported missing. The full CLI then asks again and says what it
always says, so every message and exit status has one source. tests/cli/test_attach_parser.py keeps the option
tables below in step with the typer command.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bt_search import config
from bt_search.cli.query_input import collect_queries
from bt_search.media.scan import canonical_path
from bt_search.output.render import check_format, default_format, write_query_output
from bt_search.search.terms import parse_line
from bt_search.serve.client import served_options, served_results


def _count(text: str) -> int:
    """A typer `int` option with min=1, in its plain spelling only."""
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise ValueError(text)
    return int(text)


def _number(text: str) -> float:
    """A typer `float` option, in its plain spelling only (no nan, inf or underscores)."""
    if not re.fullmatch(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", text):
        raise ValueError(text)
    return float(text)


# Option spelling -> (the typer parameter's name, how its value is read). Field names are cli.query's.
VALUE_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--queries-file": ("queries_file", str),
    "--image": ("image", Path),
    "--index": ("index", Path),
    "--model": ("model", str),
    "--top-k": ("top_k", _count),
    "-k": ("top_k", _count),
    "--shortlist": ("shortlist", _count),
    "-n": ("shortlist", _count),
    "--threshold": ("threshold", _number),
    "--under": ("under", Path),
    "--format": ("fmt", str),
    "-f": ("fmt", str),
    "--device": ("device", str),
    "--precision": ("precision", str),
    "--batch-size": ("batch_size", _count),
}
FLAGS = {"--no-rerank": "no_rerank", "--null": "null", "-0": "null", "--quiet": "quiet", "-q": "quiet"}
# What only the in-process search does (terms, budgets, dates, scores, the contact sheet), and the CLI's own.
SLOW_OPTIONS = frozenset(
    {
        "--no-server",
        "--rerank-budget",
        "--after",
        "--before",
        "--sort",
        "--not",
        "--like",
        "--unlike",
        "--score",
        "--html",
        "--help",
    }
)
SLOW_ENVVARS = ("BT_SEARCH_NO_SERVER",)  # --no-server's: however spelled, the full CLI reads it
DEFAULTS: dict[str, Any] = {
    "queries_file": None,
    "image": None,
    "index": None,
    "model": None,
    "top_k": config.DEFAULT_TOP_K,
    "shortlist": None,
    "threshold": None,
    "under": None,
    "fmt": None,
    "device": None,
    "precision": "auto",
    "batch_size": None,
    "no_rerank": False,
    "null": False,
    "quiet": False,
}


def parse_args(argv: list[str]) -> dict[str, Any] | None:
    """cli.query's parameters from `bt-search query` arguments (texts included), or None: leave them to typer."""
    args: dict[str, Any] = {**DEFAULTS, "texts": []}
    seen: set[str] = set()
    tokens = iter(argv)
    for token in tokens:
        if not token.startswith("-"):
            args["texts"].append(token)
            continue
        name, equals, value = token.partition("=") if token.startswith("--") else (token, "", "")
        if name in FLAGS and not equals:
            field, value = FLAGS[name], True
        elif name in VALUE_OPTIONS:
            field, read = VALUE_OPTIONS[name]
            if not equals:  # the next token; one that looks like an option is left to typer
                value = next(tokens, None)
                if value is None or (value.startswith("-") and (field, value) != ("queries_file", "-")):
                    return None
            try:
                value = read(value)
            except ValueError:
                return None
        else:
            return None  # SLOW_OPTIONS, --help, "--", "-k5", anything unknown
        if field in seen:
            return None  # repeated: typer decides
        seen.add(field)
        args[field] = value
    return args


def attached_query(argv: list[str]) -> int | None:
    """The exit status of `bt-search query ARGV` answered by a running server, or None: run the full CLI."""
    args = parse_args(argv)
    if args is None or any(name in os.environ for name in SLOW_ENVVARS):
        return None
    replay = None
    try:
        if args["queries_file"] == "-":
            replay = _replayable_stdin()
        answer = _served(args)
    except KeyboardInterrupt as err:
        return _as_the_cli_exits(err, args["quiet"])
    except Exception:  # noqa: BLE001 - any doubt: the full CLI runs and reports as it always does
        answer = None
    if answer is None:
        if replay is not None:
            replay.seek(0)  # the full CLI reads the same lines from the start
        return None
    try:
        write_query_output(*answer, sys.stdout, null_separated=args["null"])
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - output has begun: exit as the CLI would
        return _as_the_cli_exits(err, args["quiet"])
    return 0


def _served(args: dict[str, Any]) -> tuple[list, str] | None:
    """(results, format) from a server, exactly as cli.query's served branch gets them; None if not answered."""
    fmt = args["fmt"] or ("paths" if args["null"] else default_format(sys.stdout.isatty()))
    check_format(fmt, args["null"])
    image = None if args["image"] is None else str(args["image"])
    queries = collect_queries(args["texts"], args["queries_file"], args["image"])
    if not all(_plain(q) for q in queries):
        return None  # query syntax (--not inside a line, weights): the in-process search
    under = None if args["under"] is None else str(Path(canonical_path(args["under"])))
    options = served_options(
        top_k=args["top_k"],
        shortlist=args["shortlist"],
        rerank=not args["no_rerank"],
        threshold=args["threshold"],
        under=under,
        image=image,
    )
    missing: list[str] = []
    results = served_results(
        str(config.index_dir(args["index"])),
        model=args["model"],
        device=args["device"] or config.default_device(),
        precision=args["precision"],
        queries=queries,
        image=image,
        options=options,
        on_missing=lambda path, reason: missing.append(path),
        notice=lambda message: None,  # a server was not used: the full CLI will say why
    )
    if results is None or (missing and not args["quiet"]):
        return None  # the CLI asks again (the server's result cache answers) and prints the skipped files
    return results, fmt


def _plain(query: str) -> bool:
    terms = parse_line(query)
    return terms.is_plain and terms.label == query


def _replayable_stdin() -> io.BytesIO:
    """Read `--queries-file -` now and put a copy in stdin's place, to read again if the full CLI runs after all."""
    copy = io.BytesIO(sys.stdin.buffer.read())
    sys.stdin = io.TextIOWrapper(copy)
    return copy


def _as_the_cli_exits(err: BaseException, quiet: bool) -> int:
    """Report `err` as cli.cli_errors does (message, exit status). Rare, so loading the full CLI here is fine."""
    import typer

    from bt_search.cli.app import cli_errors

    try:
        with cli_errors(quiet):
            raise err
    except typer.Exit as exit:
        return exit.exit_code
