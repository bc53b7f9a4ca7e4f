"""The `bt-search` console script. `query` is first offered to a running server through a light path
(cli/attach.py: no typer, rich, torch or numpy); everything else, and any query that path leaves, runs the
typer CLI (cli/app.py) exactly as before."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["query"]:
        from bt_search.cli.attach import attached_query

        status = attached_query(argv[1:])
        if status is not None:
            sys.exit(status)
    from bt_search.cli.app import app

    app(args=argv, prog_name="bt-search")
