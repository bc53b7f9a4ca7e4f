"""`index_paths(..., progress=True)`: a `tqdm.auto` bar (a widget in Jupyter, text on a terminal)."""

from __future__ import annotations

import sys

from bt_search.indexing.run import IndexProgress


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
