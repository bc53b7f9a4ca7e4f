"""Render the demo contact sheet headless and save docs/demo-contact-sheet.png (shown in README).

Indexes sample_data/images with the demo model into a temporary index, runs a few queries (README's
quickstart query first) through the same code as `bt-search query --html`, and screenshots the page in
headless Chromium (tests/cdp.py). Paths are shown relative to the repository, as a clone would have them,
not as the absolute paths of the machine that made the picture.

    python scripts/make_demo_screenshot.py
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
from bt_search.search.searcher import Searcher  # noqa: E402
from bt_search.store import IndexIdentity, IndexReader, IndexWriter  # noqa: E402
from tests.support.cdp import screenshot  # noqa: E402

QUERIES = ["a yellow square below a blue triangle", "a red circle above a purple square", "two green triangles"]


def main() -> None:
    engine = load_engine(str(ROOT / "sample_data" / "demo-model"), device="cpu")
    with tempfile.TemporaryDirectory() as work:
        with IndexWriter.open(Path(work) / "index", IndexIdentity.of(engine)) as writer:
            index_paths([str(ROOT / "sample_data" / "images")], writer, engine, workers=0)
        searcher = Searcher(IndexReader.open(Path(work) / "index"), engine)
        hits = [hit for hits in searcher.search(QUERIES, top_k=5, shortlist=20) for hit in hits]
        os.chdir(ROOT)  # the sheet opens relative paths from here
        hits = [replace(hit, path=os.path.relpath(hit.path, ROOT)) for hit in hits]
        page = Path(work) / "results.html"
        write_contact_sheet(hits, page, title="bt-search demo: reranked results")
        target = ROOT / "docs" / "demo-contact-sheet.png"
        screenshot(page, target, width=1200, height=1000)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
