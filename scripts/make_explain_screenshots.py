"""Screenshots of explanations (`--explain`) for the docs: the contact sheet and the search page, overlays shown.

Indexes sample_data/images with the demo model into a temporary index, writes a contact sheet of an explained
query (the code `bt-search query --explain --html` runs), starts `bt-search serve` on the same index, and
screenshots both in headless Chromium (tests/support/cdp.py) after picking a word on the first cards (a click on
their radio buttons: the pages themselves run no script). Writes docs/explain-contact-sheet.png and
docs/explain-serve-page.png.

    python scripts/make_explain_screenshots.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bt_search.engine.loading import load_engine  # noqa: E402
from bt_search.indexing.run import index_paths  # noqa: E402
from bt_search.output.html_sheet import write_contact_sheet  # noqa: E402
from bt_search.search.searcher import Searcher  # noqa: E402
from bt_search.store import IndexIdentity, IndexReader, IndexWriter  # noqa: E402
from tests.support.cdp import Browser  # noqa: E402
from tests.support.page_server import page_server  # noqa: E402

QUERY = "a yellow square below a blue triangle"
# which map to show on the first cards, in order (the rest stay "off")
PICKS = ["query", "yellow", "triangle", "blue", "square"]
PICK_SCRIPT = """(() => {{
  const picks = {picks};
  document.querySelectorAll('.card').forEach((card, n) => {{
    const input = n < picks.length && card.querySelector(`fieldset.words input[value="${{picks[n]}}"]`);
    if (input) input.click();
  }});
  return document.querySelectorAll('img.heat').length;
}})()"""


def shoot(url: str, target: Path, width: int, height: int) -> None:
    with Browser() as browser:
        page = browser.new_page(width=width, height=height)
        page.navigate(url)
        layers = page.evaluate(PICK_SCRIPT.format(picks=json.dumps(PICKS)))
        if not layers:
            raise SystemExit(f"no heat layers on {url}")
        time.sleep(0.3)
        target.write_bytes(page.screenshot_png())
    print(f"wrote {target} ({layers} heat layers on the page)")


def main() -> None:
    engine = load_engine(str(ROOT / "sample_data" / "demo-model"), device="cpu", precision="fp32")
    with tempfile.TemporaryDirectory() as work:
        index = Path(work) / "index"
        with IndexWriter.open(index, IndexIdentity.of(engine)) as writer:
            index_paths([str(ROOT / "sample_data" / "images")], writer, engine, workers=0)
        searcher = Searcher(IndexReader.open(index), engine)
        (hits,) = searcher.search([QUERY], top_k=5, shortlist=20, explain=True)
        os.chdir(ROOT)  # the sheet opens relative paths from here
        hits = [replace(hit, path=os.path.relpath(hit.path, ROOT)) for hit in hits]
        sheet = Path(work) / "results.html"
        write_contact_sheet(hits, sheet, title="bt-search demo: where each word matched")
        shoot(sheet.absolute().as_uri(), ROOT / "docs" / "explain-contact-sheet.png", 1200, 560)

        with page_server(index, Path(work), 8791, "--precision", "fp32") as base:
            url = f"{base}/?q={quote(QUERY)}&explain=true&ranked=1"  # ranked=1: the reranked page, no shortlist step
            shoot(url, ROOT / "docs" / "explain-serve-page.png", 1200, 700)


if __name__ == "__main__":
    main()
