"""Index progress callbacks, and the `tqdm.auto` bar `index_paths(..., progress=True)` draws (a widget in
Jupyter, text on a terminal)."""

from __future__ import annotations

import sys


class IndexProgress:
    """Progress callbacks; the CLI subclasses this to draw a bar. The defaults do nothing."""

    def started(self, to_embed: int, unchanged: int) -> None: ...

    def advanced(self, count: int) -> None: ...

    def skipped(self, path: str, reason: str) -> None: ...


class TqdmProgress(IndexProgress):
    """Counts decoded files (embedded or failed) against the files to embed; skip lines are written above it."""

    def __init__(self, **tqdm_options):
        self.options = {"unit": "img", "desc": "indexing", **tqdm_options}
        self.bar = None

    def started(self, to_embed: int, unchanged: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=to_embed, **self.options)
        if unchanged:
            self.bar.set_postfix(unchanged=unchanged)
        if to_embed == 0:
            self.bar.close()

    def advanced(self, count: int) -> None:
        self.bar.update(count)
        if self.bar.n >= self.bar.total:
            self.bar.close()

    def skipped(self, path: str, reason: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"skipped {path!r}: {reason}", file=sys.stderr)
