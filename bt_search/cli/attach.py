"""`bt-search query` answered by a running server without loading the full CLI: the attach fast path.

Through a warm server a query is one HTTP round trip, and importing typer (which builds pydantic adapters)
and rich would cost more than all the rest. So the console script starts in launcher.py, which offers
`query` arguments to `attached_query` first. It reads the common options with a small parser (standard
library only) built from the same option table as the typer command (options.py), asks the server by the
same rule (served.py) and prints with the renderers the full CLI uses (output/).

Whenever it is not sure, it returns None before printing anything, and the full CLI runs exactly as it
would without it: an option it leaves to the CLI (not `light` in the table, `--help`), an unusual spelling (`-k5`,
a repeated option, a value starting with "-"), a value the CLI would refuse, no matching server, an error
answered by the server, or files the search reported missing. The full CLI then asks again and says what it
always says, so every message and exit status has one source.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from bt_search.cli.live import live_view
from bt_search.cli.options import QUERY_DEFAULTS, QUERY_OPTIONS, QueryOption
from bt_search.cli.query_input import collect_queries
from bt_search.cli.served import canonical_under, exit_status, served_hits
from bt_search.output.formats import check_format, default_format
from bt_search.output.hits import write_query_output


def _whole(minimum: int | None) -> Callable[[str], int]:
    """A typer `int` option (with its `min`), in its plain spelling only."""

    def read(text: str) -> int:
        if not re.fullmatch(r"[0-9]+", text) or int(text) < (minimum or 0):
            raise ValueError(text)
        return int(text)

    return read


def _number(text: str) -> float:
    """A typer `float` option, in its plain spelling only (no nan, inf or underscores)."""
    if not re.fullmatch(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", text):
        raise ValueError(text)
    return float(text)


def _reader(option: QueryOption) -> Callable[[str], Any]:
    """How the attach parser reads a value option (typer's plain spellings only)."""
    if option.kind is int:
        return _whole(option.min)
    if option.kind is float:
        return _number
    return str if option.kind is list else option.kind


# Spelling -> (the parameter's name, how its value is read), for the options the light path reads; both come
# from the one table the typer command is built from (options.py).
VALUE_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    flag: (option.name, _reader(option))
    for option in QUERY_OPTIONS
    if option.light and option.kind is not bool
    for flag in option.flags
}
FLAGS = {flag: option.name for option in QUERY_OPTIONS if option.light and option.kind is bool for flag in option.flags}
# Environment variables of options the light path leaves to typer (--no-server's): however spelled, typer reads them.
SLOW_ENVVARS = tuple(option.envvar for option in QUERY_OPTIONS if option.envvar and not option.light)


def parse_args(argv: list[str]) -> dict[str, Any] | None:
    """cli.app.query's parameters from `bt-search query` arguments (texts included), or None: leave them to typer."""
    args: dict[str, Any] = {**QUERY_DEFAULTS, "texts": []}
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
            return None  # an option typer handles alone, --help, "--", "-k5", anything unknown
        if isinstance(args[field], list):  # a repeatable option: each spelling adds one value
            args[field] = [*args[field], value]
            continue
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
    return exit_status(args, answer[0])


def _served(args: dict[str, Any]) -> tuple[list, str] | None:
    """(results, format) from a server, exactly as cli.app.query's served branch gets them; None if not answered."""
    fmt = args["fmt"] or ("paths" if args["null"] else default_format(sys.stdout.isatty()))
    check_format(fmt, args["null"])
    queries = collect_queries(args["texts"], args["queries_file"], args["image"])
    missing: list[str] = []
    routes: list[str] = []
    with live_view(fmt, args["quiet"]) as live:  # the shortlist, then the rerank's order, as in the full CLI
        served = served_hits(
            {**args, "under": canonical_under(args["under"])},
            queries,
            on_missing=lambda path, reason: missing.append(path),
            notice=lambda message: None,  # a server was not used: the full CLI will say why
            on_route=routes.append,
            on_update=None if live is None else live.update,
        )
    if served is None or ((missing or served[1]) and not args["quiet"]):
        return None  # the CLI asks again (the server's result cache answers) and prints files and notes
    if args["verbose"] and not args["quiet"]:
        sys.stderr.write("".join(f"{line}\n" for line in routes))  # --verbose, as the full CLI says it
    return served[0], fmt


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
