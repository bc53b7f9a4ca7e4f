"""`query` on a terminal: the cosine shortlist as soon as the search has it, then the reranked order as chunks
finish, drawn in place (rich Live, transient, on stderr: the console the CLI's notes and loading lines print on,
so they land above the view, and stdout carries nothing but the answer); when the search ends the view is
erased and the answer is printed on stdout exactly as it always is. So the screen ends with the final output,
and a pipe (no view: stdout or stderr is not a terminal) gets only that.

The frames are the table format itself (output.hits.render into a buffer that passes for this terminal), under
one status line: which stage is shown and how far the rerank is.

`live_view` is the one rule for when the view is shown, for the full CLI and the attach fast path alike; this
module imports rich only when a view is made, so the fast path can ask it for any format.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import TYPE_CHECKING, Any

from bt_search.search.hits import Hit

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


class _TerminalBuffer(io.StringIO):
    """Text that the table renderer writes as it would to this terminal (colours, width: rich reads the size
    from the standard streams)."""

    def isatty(self) -> bool:
        return True


def table_text(results: list[list[Hit]]) -> Text:
    """`results` as the table format prints them, as rich Text."""
    from rich.text import Text

    from bt_search.output.hits import render  # when the first frame is drawn: the CLI imports this module at start

    buffer = _TerminalBuffer()
    for hits in results:
        render(hits, "table", buffer)
    return Text.from_ansi(buffer.getvalue().rstrip("\n"))


def stderr_console() -> Console:
    """The CLI's console on stderr (notes, bars, the live view); the attach path makes its own the same way."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def live_view(fmt: str, quiet: bool, console: Console | None = None) -> Any:
    """A LiveResults on `console` (default: a new stderr_console) when a person watches `query`: a table with
    stdout and stderr on a terminal and no --quiet; else a context that gives None (the final output alone)."""
    if fmt == "table" and not quiet and sys.stdout.isatty() and sys.stderr.isatty():
        return LiveResults(console or stderr_console())
    return contextlib.nullcontext()


class LiveResults:
    """A context manager: `update(results)` (run_query's on_update) and `progress(done, total)` (the Searcher's
    progress callback) redraw the view; leaving it erases the view, and the caller prints the answer."""

    def __init__(self, console: Console):
        from rich.live import Live

        self.console = console  # the CLI's stderr console: its notes then print above the view, not into it
        self.live = Live(
            console=console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        )
        self.results: list[list[Hit]] | None = None
        self.done, self.total, self.updates = 0, 0, 0

    def __enter__(self) -> LiveResults:
        return self  # the view starts with its first frame: a search that shows nothing leaves no trace

    def __exit__(self, *exc: Any) -> None:
        if self.live.is_started:
            self.live.stop()

    def update(self, results: list[list[Hit]]) -> None:
        self.results, self.updates = results, self.updates + 1
        self._draw()

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.results is not None:
            self._draw()

    def _draw(self) -> None:
        stage = "cosine shortlist" if self.updates <= 1 else "reranked so far, then the cosine shortlist"
        from rich.console import Group
        from rich.text import Text

        rate = f": reranking {self.done}/{self.total} candidates" if self.total else ""
        status = Text(f"{stage}{rate} …", style="dim")
        if not self.live.is_started:
            self.live.start()
        self.live.update(Group(table_text(self.results or []), status), refresh=True)
