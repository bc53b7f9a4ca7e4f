"""The one rule for `bt-search query` through a running server, shared by the full CLI (app.py) and the
light attach path (attach.py): which queries a server may answer, the request it is sent (the same
QueryRequest the in-process search answers), and the hits it returns.

Standard library only (no typer, rich, torch or numpy).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bt_search import config
from bt_search.cli.options import asks_only_what_a_server_answers
from bt_search.errors import EXIT_NO_MATCH
from bt_search.media.scan import canonical_path
from bt_search.search.hits import Hit
from bt_search.search.match import no_match
from bt_search.search.query import QueryRequest
from bt_search.serve.client import served_results


def canonical_under(under: Path | None) -> Path | None:
    """--under as the index stores paths (canonical), so the server and the in-process search agree."""
    return None if under is None else Path(canonical_path(under))


def query_request(options: dict[str, Any], queries: list[str]) -> QueryRequest:
    """cli.app.query's parameters (--under already canonical) as the request both the in-process search and
    a server answer."""
    image, under = options["image"], options["under"]
    return QueryRequest(
        queries=tuple(queries),
        image=None if image is None else str(image),
        nots=tuple(options["nots"]),
        likes=tuple(options["likes"]),
        unlikes=tuple(options["unlikes"]),
        top_k=options["top_k"],
        shortlist=options["shortlist"],
        rerank=not options["no_rerank"],
        rerank_budget=options["rerank_budget"],
        threshold=options["threshold"],
        under=None if under is None else str(under),
        after=options["after"],
        before=options["before"],
        sort=options["sort"],
        score=options["score"],
        frames=options["frames"],
        explain=options["explain"] or options["explain_dir"] is not None,
        fold=not options["no_fold"],
        min_match=options["min_match"],
    )


def exit_status(options: dict[str, Any], results: list[list[Hit]]) -> int:
    """`query`'s exit status for hits it printed: EXIT_NO_MATCH when `--min-match` left none, else 0 (the CLI and
    the attach path both ask this)."""
    return EXIT_NO_MATCH if no_match(options["min_match"], results) else 0


def served_hits(
    options: dict[str, Any],
    queries: list[str],
    *,
    on_missing: Callable[[str, str], None],
    notice: Callable[[str], None],
    on_route: Callable[[str], None] | None = None,
    on_update: Callable[[list[list[Hit]]], None] | None = None,
) -> tuple[list[list[Hit]], list[str]] | None:
    """(hits per query, the search's notes) from a running `bt-search serve` for the index and model `options`
    name (cli.app.query's parameters, --under already canonical), or None: search in-process. `on_route` hears
    which path answers and why (--verbose) whenever `notice` does not already say it; `on_update` the hits as
    they improve (a terminal's live view), as in-process."""
    if not asks_only_what_a_server_answers(options):
        if on_route is not None:
            on_route("searching in-process: --no-server (or BT_SEARCH_NO_SERVER) was given")
        return None
    return served_results(
        str(config.index_dir(options["index"])),
        model=options["model"],
        device=options["device"] or config.default_device(),
        precision=options["precision"],
        request=query_request(options, queries),
        on_missing=on_missing,
        notice=notice,
        on_route=on_route,
        on_update=on_update,
    )
