"""The search page driven in headless Chromium: type a query, see results, click one, see similar images.

Uses the shipped demo model and sample images, so the screenshot (BT_SEARCH_SCREENSHOT=docs/serve-page.png
saves it there) shows a real search.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.cdp import Browser, find_chromium
from tests.support.cli import cli_index
from tests.support.paths import REPO_ROOT
from tests.support.serve import ServerProcess

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install -y chromium")
REPO = REPO_ROOT
QUERY = "a red circle"
PAGE_STATE = """({
  heading: (document.querySelector('h2') || {}).textContent || '',
  cards: document.querySelectorAll('li.card').length,
  widths: Array.from(document.querySelectorAll('li.card img'), img => img.complete ? img.naturalWidth : -1),
  paths: Array.from(document.querySelectorAll('li.card a.path'), a => a.title),
  query: document.querySelector('input[name=q]').value,
})"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-page")
    photos, runtime = root / "photos", root / "run"
    photos.mkdir()
    runtime.mkdir(mode=0o700)
    for image in sorted((REPO / "sample_data" / "images").glob("img_*"))[:48]:
        shutil.copy(image, photos / image.name)
    model = REPO / "sample_data" / "demo-model"
    cli_index([photos], root / "index", model, "--quiet")  # in-process: the served page is the subject
    process = ServerProcess(root / "index", runtime)
    yield process
    assert process.terminate() == 0


def wait_for_navigation(page, action) -> dict:
    action()
    page.browser.wait_event("Page.loadEventFired", page.session_id)
    return page.evaluate(PAGE_STATE)


def test_type_search_click_similar(server, tmp_path):
    with Browser(CHROMIUM) as browser:
        page = browser.new_page(width=1200, height=900)
        page.navigate(server.url + "/")
        assert page.evaluate("document.activeElement.name") == "q"  # the box has the focus: just type

        def type_and_enter():
            page.send("Input.insertText", {"text": QUERY})
            for kind in ("rawKeyDown", "char", "keyUp"):
                page.send(
                    "Input.dispatchKeyEvent",
                    {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
                )

        results = wait_for_navigation(page, type_and_enter)
        assert results["query"] == QUERY and QUERY in results["heading"]
        assert results["cards"] == 24 and all(w > 0 for w in results["widths"])  # every thumbnail decoded
        shot = page.screenshot_png()

        clicked = results["paths"][2]
        box = page.evaluate(
            "(() => { const r = document.querySelectorAll('li.card a.thumb')[2].getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )

        def click():
            for kind in ("mousePressed", "mouseReleased"):
                page.send(
                    "Input.dispatchMouseEvent",
                    {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
                )

        similar = wait_for_navigation(page, click)
        assert similar["heading"] == f"Images similar to {clicked}"
        assert similar["paths"][0] == clicked and similar["cards"] == 24 and all(w > 0 for w in similar["widths"])
        assert all(url.startswith(server.url + "/") for url in page.requested_urls())  # nothing from elsewhere
    target = Path(os.environ.get("BT_SEARCH_SCREENSHOT") or tmp_path / "serve-page.png")
    target.write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
