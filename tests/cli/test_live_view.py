"""The terminal view of `query` (cli/live.py) on rich's own terminal console: each update is drawn in place,
the cosine shortlist before the reranked order, with the rerank's progress, and the view is erased at the end."""

from __future__ import annotations

import io
import re

from rich.console import Console

from bt_search.cli.live import LiveResults
from bt_search.search.hits import Hit

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def hits(names: str, reranked: int) -> list[Hit]:
    return [
        Hit(
            "a query",
            rank,
            f"/photos/{name}.png",
            0.9 - rank / 10,
            0.5 - rank / 20,
            rank,
            None,
            0.4 if rank <= reranked else None,
        )
        for rank, name in enumerate(names, 1)
    ]


def test_the_shortlist_is_drawn_then_the_reranked_order_then_nothing(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    stream = io.StringIO()
    with LiveResults(Console(file=stream, force_terminal=True, width=100)) as live:
        live.progress(0, 4)  # nothing to show yet
        assert stream.getvalue().count("/photos/") == 0
        live.update([hits("abcd", 0)])
        live.progress(2, 4)
        live.update([hits("cabd", 2)])
    raw = stream.getvalue()
    frames = [ANSI.sub("", frame) for frame in re.split(r"\r\x1b\[2K(?:\x1b\[1A\x1b\[2K)+", raw)]
    orders = [re.findall(r"/photos/(\w)\.png", frame) for frame in frames]
    assert orders[0] == list("abcd") and "cosine shortlist:" in frames[0]
    assert ["c", "a", "b", "d"] in orders[1:] and "reranking 2/4 candidates" in frames[-1]
    erased = re.search(r"\r((?:\x1b\[1A\x1b\[2K)+)$", raw)  # the view erased, line by line, at the end
    assert erased and erased.group(1).count("\x1b[1A") == len(frames[-1].strip().split("\n"))


def test_a_view_that_never_drew_leaves_nothing_on_the_terminal():
    """The attach path opens the view before it knows a server will answer; when none does, the full CLI draws
    its own, and the first must not have written anything (not even an empty frame)."""
    stream = io.StringIO()
    with LiveResults(Console(file=stream, force_terminal=True, width=100)) as live:
        live.progress(0, 4)
    assert stream.getvalue() == ""
