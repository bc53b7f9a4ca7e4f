"""End to end: the contact sheet in headless Chromium (skipped when Chromium is not installed)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bt_search.output.html_sheet import write_contact_sheet
from bt_search.search.hits import Hit
from tests.support.cdp import Browser, find_chromium, screenshot

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed: apt-get install -y chromium (or put chromium on PATH)"
)

PAYLOAD_NAME = "<img src=x onerror=\"document.title='pwned'\">.png"
PAGE_STATE = """({
  title: document.title,
  widths: Array.from(document.images, img => img.complete ? img.naturalWidth : -1),
  injected: document.querySelectorAll('img[src="x"]').length,
  cards: document.querySelectorAll('li.card').length,
  text: document.body.innerText,
  shown: Array.from(document.querySelectorAll('li.card a.path'), a => a.textContent),
  bands: Array.from(document.querySelectorAll('li.card a.thumb img'), img =>
    img.parentElement.getBoundingClientRect().height - img.getBoundingClientRect().height),
  ratios: Array.from(document.querySelectorAll('li.card a.thumb img'), img =>
    img.getBoundingClientRect().width / img.getBoundingClientRect().height),
})"""


@pytest.fixture(scope="module")
def browser():
    with Browser(CHROMIUM) as b:
        yield b


def load(browser: Browser, html_path: Path):
    page = browser.new_page(width=1000, height=700)
    page.navigate(html_path.as_uri())
    return page, page.evaluate(PAGE_STATE)


@pytest.fixture
def sheet(tmp_path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    colours = {"red.jpg": (220, 20, 20), "green.png": (20, 200, 20), PAYLOAD_NAME: (20, 20, 220)}
    for name, colour in colours.items():
        image_format = "PNG" if name.endswith("png") else "JPEG"
        Image.new("RGB", (300, 200), colour).save(images / name, format=image_format)
    paths = [str(images / name) for name in colours]
    hits = [Hit("red things", r, p, 0.9 - r / 10, 0.3, 4 - r) for r, p in enumerate(paths, start=1)]
    hits.append(Hit("<b>bold</b> query", 1, str(images / "gone.jpg"), 0.5, 0.2, 1))
    out = tmp_path / "sheet.html"
    write_contact_sheet(hits, out)
    return out


def test_sheet_renders_safely_and_offline(browser, sheet):
    page, state = load(browser, sheet)

    assert state["title"] == "bt-search results"  # the payload's onerror never ran
    assert state["injected"] == 0
    assert state["cards"] == 4
    assert len(state["widths"]) == 3 and all(w > 0 for w in state["widths"])  # every thumbnail decoded
    assert PAYLOAD_NAME in state["text"] and "<b>bold</b> query" in state["text"]
    assert "missing: gone.jpg" in state["text"]
    # as on the search page: names under the hits' common folder (shown once), a date, each image its own shape
    assert state["shown"] == ["red.jpg", "green.png", PAYLOAD_NAME, "gone.jpg"]
    assert f"under {sheet.parent / 'images'}/" in state["text"] and state["text"].count("modified") == 3
    assert all(abs(band) <= 1 for band in state["bands"]) and all(abs(r - 1.5) < 0.02 for r in state["ratios"])
    requests = page.requested_urls()
    assert requests[0] == sheet.as_uri()
    assert all(url == sheet.as_uri() or url.startswith("data:image/jpeg;base64,") for url in requests)


def test_harness_would_see_an_attack(browser, tmp_path):
    """Control: an unescaped payload and an external image are caught by the same checks."""
    unsafe = tmp_path / "unsafe.html"
    unsafe.write_text(
        f'<!doctype html><title>bt-search results</title>{PAYLOAD_NAME[:-4]}<img src="http://127.0.0.1:9/tracker.png">',
        encoding="utf-8",
    )
    page, state = load(browser, unsafe)
    assert state["title"] == "pwned"
    assert state["injected"] == 1
    assert "http://127.0.0.1:9/tracker.png" in page.requested_urls()


def test_screenshot_helper(sheet, tmp_path):
    png = tmp_path / "shot.png"
    screenshot(sheet, png, width=800, height=600)
    image = Image.open(io.BytesIO(png.read_bytes()))
    assert image.format == "PNG" and image.size == (800, 600)
    colours = image.convert("RGB").getcolors(maxcolors=1 << 16) or []
    assert any(c[1][0] > 180 and c[1][1] < 60 and c[1][2] < 60 for c in colours)  # the red thumbnail shows
