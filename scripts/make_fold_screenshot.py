"""Render a contact sheet with folded near-duplicates headless and save docs/fold-contact-sheet.png.

Writes a few demo_data scenes with copies of each (a quality-60 JPEG, a half-size and a 1%-cropped copy) and
a distinct render of each caption (tests/support/copies.py), indexes them with the demo model, runs one
caption through the same code as `bt-search query --html` (search/query.run_query, folding on), and
screenshots the sheet in headless Chromium with the first card's `+N similar` list opened; then the search page
of `bt-search serve` on the same index, the same query (docs/fold-serve-page.png).

    python scripts/make_fold_screenshot.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bt_search.engine.loading import load_engine  # noqa: E402
from bt_search.indexing.run import index_paths  # noqa: E402
from bt_search.output.html_sheet import write_contact_sheet  # noqa: E402
from bt_search.search.query import QueryRequest, run_query  # noqa: E402
from bt_search.search.searcher import Searcher  # noqa: E402
from bt_search.store import IndexIdentity, IndexReader, IndexWriter  # noqa: E402
from tests.support.cdp import Browser, screenshot  # noqa: E402
from tests.support.copies import same_caption_pairs, write_library  # noqa: E402
from tests.support.page_server import page_server  # noqa: E402

OPEN_FIRST_STACK = """(() => {
  const details = document.querySelector('details.similar');
  if (details) details.open = true;
  return document.querySelectorAll('.card.stacked').length;
})()"""


def main() -> None:
    engine = load_engine(str(ROOT / "sample_data" / "demo-model"), device="cpu")
    with tempfile.TemporaryDirectory() as work:
        photos = Path(work) / "photos"
        write_library(photos, 4)
        with IndexWriter.open(Path(work) / "index", IndexIdentity.of(engine)) as writer:
            index_paths([str(photos)], writer, engine, workers=0)
        searcher = Searcher(IndexReader.open(Path(work) / "index"), engine)
        caption = same_caption_pairs(1)[0][0]
        (hits,) = run_query(searcher, QueryRequest(queries=(caption,), top_k=4, shortlist=20))
        os.chdir(work)  # paths as a user in that folder sees them
        relative = [
            replace(h, path=os.path.relpath(h.path), duplicates=tuple(os.path.relpath(p) for p in h.duplicates))
            for h in hits
        ]
        page = Path(work) / "results.html"
        write_contact_sheet(relative, page, title="bt-search: near-duplicates folded")
        page.write_text(page.read_text().replace('<details class="similar">', '<details class="similar" open>', 1))
        target = ROOT / "docs" / "fold-contact-sheet.png"
        screenshot(page, target, width=1000, height=560)
        print(f"wrote {target}")
        with page_server(Path(work) / "index", Path(work), 8792) as base, Browser() as browser:
            tab = browser.new_page(width=1200, height=740)
            tab.navigate(f"{base}/?q={quote(caption)}&ranked=1")  # ranked=1: the reranked page at once
            stacks = tab.evaluate(OPEN_FIRST_STACK)
            if not stacks:
                raise SystemExit("no folded stack on the search page")
            target = ROOT / "docs" / "fold-serve-page.png"
            target.write_bytes(tab.screenshot_png())
        print(f"wrote {target} ({stacks} stacked cards on the page)")


if __name__ == "__main__":
    main()
