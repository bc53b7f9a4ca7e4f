"""Render a contact sheet with folded near-duplicates headless and save docs/fold-contact-sheet.png.

Writes a few demo_data scenes with copies of each (a quality-60 JPEG, a half-size and a 1%-cropped copy) and
a distinct render of each caption (tests/support/copies.py), indexes them with the demo model, runs one
caption through the same code as `bt-search query --html` (search/query.run_query, folding on), and
screenshots the sheet in headless Chromium with the first card's `+N similar` list opened.

    python scripts/make_fold_screenshot.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bt_search.engine.loading import load_engine  # noqa: E402
from bt_search.indexing.run import index_paths  # noqa: E402
from bt_search.output.html_sheet import write_contact_sheet  # noqa: E402
from bt_search.search.query import QueryRequest, run_query  # noqa: E402
from bt_search.search.searcher import Searcher  # noqa: E402
from bt_search.store import IndexIdentity, IndexReader, IndexWriter  # noqa: E402
from tests.support.cdp import screenshot  # noqa: E402
from tests.support.copies import same_caption_pairs, write_library  # noqa: E402


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


if __name__ == "__main__":
    main()
