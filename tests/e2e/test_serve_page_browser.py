"""The search page driven in headless Chromium: type a query, see results, click one, see similar images, open
one full size, narrow the search to a date range.

Uses the shipped demo model and sample images (and two dated photos that are not square), so the screenshot
(BT_SEARCH_SCREENSHOT=docs/serve-page.png saves it there) shows a real search.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from tests.support.cdp import Browser, find_chromium
from tests.support.cli import cli_index
from tests.support.paths import REPO_ROOT
from tests.support.serve import ServerProcess

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install -y chromium")
REPO = REPO_ROOT
QUERY = "a red circle"
DATED = {"wide.jpg": (192, 64), "tall.jpg": (64, 128)}  # taken 2019-05-04, the only images of 2019
PAGE_STATE = """({
  heading: (document.querySelector('h2') || {}).textContent || '',
  facts: (document.querySelector('header .facts') || {}).textContent || '',
  error: (document.querySelector('.error') || {}).textContent || '',
  cards: document.querySelectorAll('li.card').length,
  widths: Array.from(document.querySelectorAll('li.card img'), img => img.complete ? img.naturalWidth : -1),
  paths: Array.from(document.querySelectorAll('li.card a.path'), a => a.title),
  shown: Array.from(document.querySelectorAll('li.card a.path'), a => a.textContent),
  dates: Array.from(document.querySelectorAll('li.card'), li => (li.querySelector('dd.date') || {}).textContent || ''),
  // per card: the thumbnail link's box, the image's box and its natural size (aspect ratio, no empty band)
  boxes: Array.from(document.querySelectorAll('li.card a.thumb'), a => {
    const img = a.querySelector('img'), box = a.getBoundingClientRect(), shown = img.getBoundingClientRect();
    return [box.height, shown.width, shown.height, img.naturalWidth, img.naturalHeight];
  }),
  // per path: whether every line break falls after a "/" (never inside a name)
  wholeNames: Array.from(document.querySelectorAll('li.card a.path'), a => {
    const range = document.createRange(), text = a.textContent;
    let offset = 0, top = null, ok = true;
    for (const node of Array.from(a.childNodes).filter(n => n.nodeType === 3)) {
      for (let i = 0; i < node.length; i++, offset++) {
        range.setStart(node, i); range.setEnd(node, i + 1);
        const y = range.getBoundingClientRect().top;
        if (top !== null && y > top + 1 && text[offset - 1] !== '/') ok = false;
        top = y;
      }
    }
    return ok;
  }),
  query: document.querySelector('input[name=q]').value,
  pending: document.querySelectorAll('.pending').length,
  itms: document.querySelectorAll('li.card dd.itm').length,
  after: document.querySelector('input[name=after]').value,
})"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-page")
    photos, runtime = root / "photos", root / "run"
    (photos / "dated").mkdir(parents=True)
    runtime.mkdir(mode=0o700)
    for image in sorted((REPO / "sample_data" / "images").glob("img_*"))[:48]:
        shutil.copy(image, photos / image.name)
    for (name, size), source in zip(DATED.items(), sorted((REPO / "sample_data" / "images").glob("img_*"))[48:]):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = "2019:05:04 10:11:12"
        Image.open(source).convert("RGB").resize(size).save(photos / "dated" / name, exif=exif, quality=95)
    model = REPO / "sample_data" / "demo-model"
    cli_index([photos], root / "index", model, "--quiet")  # in-process: the served page is the subject
    process = ServerProcess(root / "index", runtime)
    process.photos = photos
    yield process
    assert process.terminate() == 0


def wait_for_navigation(page, action, loads: int = 1) -> dict:
    """The page `action` leads to, `loads` pages later: 2 for a reranked search not answered before (its cosine
    shortlist first, whose meta refresh loads the reranked page; the DOM cannot be asked in between, as the
    refresh may already be under way)."""
    action()
    for _ in range(loads):
        page.browser.wait_event("Page.loadEventFired", page.session_id)
    return page.evaluate(PAGE_STATE)


def click_at(page, selector: str, number: int) -> None:
    box = page.evaluate(
        f"(() => {{ const r = document.querySelectorAll({selector!r})[{number}].getBoundingClientRect();"
        " return {x: r.x + r.width / 2, y: r.y + Math.min(r.height / 2, 8)}; })()"
    )
    for kind in ("mousePressed", "mouseReleased"):
        page.send(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
        )


AFTER_TWO_FRAMES = "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done({}))))"


def test_type_search_click_similar(server, tmp_path):
    with Browser(CHROMIUM) as browser:
        page = browser.new_page(width=1200, height=900)
        page.navigate(server.url + "/")
        # the box has the focus: just type (autofocus is applied at a rendering update, which may follow the load)
        assert page.evaluate(AFTER_TWO_FRAMES.format("document.activeElement.name")) == "q"
        home = page.evaluate(PAGE_STATE)
        assert home["facts"] == f"index index · 50 images · under {server.photos}/"  # the index's name and size

        def type_and_enter():
            page.send("Input.insertText", {"text": QUERY})
            for kind in ("rawKeyDown", "char", "keyUp"):
                page.send(
                    "Input.dispatchKeyEvent",
                    {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
                )

        results = wait_for_navigation(page, type_and_enter, loads=2)
        assert results["query"] == QUERY and QUERY in results["heading"]
        assert results["pending"] == 0 and results["itms"] == 24  # the reranked page, after the shortlist
        assert results["cards"] == 24 and all(w > 0 for w in results["widths"])  # every thumbnail decoded
        # paths relative to the folder holding every indexed image, never broken inside a name; a date on each card
        assert [str(server.photos / shown) for shown in results["shown"]] == results["paths"]
        assert all(results["wholeNames"]) and all(results["dates"])
        assert all(abs(box[0] - box[2]) <= 1 for box in results["boxes"])  # no empty band around a thumbnail
        shot = page.screenshot_png()

        clicked = results["paths"][2]
        similar = wait_for_navigation(page, lambda: click_at(page, "li.card a.thumb", 2))
        assert similar["heading"] == f"Images similar to {clicked}"
        assert similar["paths"][0] == clicked and similar["cards"] == 24 and all(w > 0 for w in similar["widths"])

        # the full-size view: a JPEG of the indexed file, served for a row the server returned
        full = page.evaluate("document.querySelectorAll('li.card a.path')[0].href")
        page.browser.send("Page.navigate", {"url": full}, page.session_id)
        page.browser.wait_event("Page.loadEventFired", page.session_id)
        assert page.evaluate("document.contentType") == "image/jpeg"
        assert page.evaluate("[document.images[0].naturalWidth, document.images[0].naturalHeight]") == [64, 64]
        # nothing from elsewhere (Chromium draws the date inputs' calendar icons from its own data: SVGs)
        others = [url for url in page.requested_urls() if not url.startswith((server.url + "/", "data:image/svg+xml"))]
        assert others == []
    target = Path(os.environ.get("BT_SEARCH_SCREENSHOT") or tmp_path / "serve-page.png")
    target.write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_date_range_narrows_the_search_and_keeps_each_image_its_shape(server):
    with Browser(CHROMIUM) as browser:
        page = browser.new_page(width=1000, height=800)
        page.navigate(server.url + "/")

        def search_2019():  # as a person fills the form: no script on the page, the browser submits it
            page.evaluate(
                "(() => { const f = document.forms[0]; f.q.value = 'a photo'; f.after.value = '2019-01-01';"
                " f.before.value = '2019-12-31'; f.requestSubmit(); })()"
            )

        dated = wait_for_navigation(page, search_2019, loads=2)
        assert dated["after"] == "2019-01-01" and dated["cards"] == 2 and dated["error"] == ""
        assert sorted(dated["shown"]) == ["dated/tall.jpg", "dated/wide.jpg"]
        assert dated["dates"] == ["2019-05-04 10:11"] * 2  # the capture date, from EXIF
        for link_height, width, height, natural_width, natural_height in dated["boxes"]:
            assert abs(width / height - natural_width / natural_height) < 0.02  # the image's own aspect ratio
            assert abs(link_height - height) <= 1  # and no band above or below it
        similar = wait_for_navigation(page, lambda: click_at(page, "li.card a.thumb", 0))
        assert similar["after"] == "2019-01-01" and similar["cards"] == 2  # similar images in the same range

        def search_2030():
            page.evaluate(
                "(() => { const f = document.forms[0]; f.q.value = 'a photo'; f.after.value = '2030-01-01';"
                " f.before.value = ''; f.requestSubmit(); })()"
            )

        empty = wait_for_navigation(page, search_2030)
        assert empty["cards"] == 0 and "no indexed images match" in empty["error"]


# Each page's cards as it finished loading, appended to window.name (which survives same-origin navigations):
# DevTools cannot read the DOM while a navigation is held, so the page records itself (CDP's injected script
# runs despite the page's CSP; the page itself has none).
RECORD_LOADS = """addEventListener('load', () => {
  const log = JSON.parse(window.name || '[]');
  log.push({search: location.search, pending: document.querySelectorAll('.pending').length,
            itms: document.querySelectorAll('li.card dd.itm').length,
            widths: Array.from(document.querySelectorAll('li.card img'), img => img.naturalWidth),
            paths: Array.from(document.querySelectorAll('li.card a.path'), a => a.title)});
  window.name = JSON.stringify(log);
});"""


def test_the_shortlist_shows_first_then_the_reranked_order(server):
    """No script: the first answer is the cosine shortlist with a meta refresh to the reranked page; the browser
    keeps the shortlist on screen while that is computed (held here by intercepting its answer)."""
    query = "a+blue+square"
    cosine = [h["path"] for h in server.get_json(f"/api/search?q={query}&top_k=24&shortlist=48&rerank=false")["hits"]]
    with Browser(CHROMIUM) as browser:
        page = browser.new_page(width=1000, height=800)
        page.send("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_LOADS})
        page.send("Fetch.enable", {"patterns": [{"urlPattern": "*ranked=1*", "requestStage": "Response"}]})
        page.send("Page.navigate", {"url": f"{server.url}/?q={query}"})
        paused = page.browser.wait_event("Fetch.requestPaused", page.session_id)  # the reranked page, computed
        held = Image.open(io.BytesIO(page.screenshot_png())).convert("L")  # what the user sees meanwhile
        page.send("Fetch.continueRequest", {"requestId": paused["params"]["requestId"]})
        page.browser.wait_event("Page.loadEventFired", page.session_id)
        page.browser.wait_event("Page.loadEventFired", page.session_id)
        first, final = page.evaluate("JSON.parse(window.name)")
        shown = Image.open(io.BytesIO(page.screenshot_png())).convert("L")
    assert first["search"] == f"?q={query}" and final["search"].endswith("&ranked=1")
    assert first["pending"] == 1 and first["itms"] == 0 and first["paths"] == cosine  # the shortlist, first
    assert len(first["paths"]) == 24 and all(w > 0 for w in first["widths"])  # with its thumbnails
    reranked = server.get_json(f"/api/search?q={query}&top_k=24&shortlist=48")["hits"]
    assert final["pending"] == 0 and final["itms"] == 24 and final["paths"] == [h["path"] for h in reranked]
    assert final["paths"] != cosine  # the rerank moved something (else this test would show nothing)
    assert held.getextrema()[0] < 128 and ImageChops.difference(held, shown).getbbox() is not None  # cards, then others
