"""Explanations as pictures (output/explanations.py): heat layers where the map says, PNG files per hit and word,
and the no-script toggles on the contact sheet and the search page."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image

from bt_search.output.explanations import heat_layer, overlay_name, write_overlays
from bt_search.output.html_sheet import render_contact_sheet
from bt_search.search.hits import Explanation, Hit
from bt_search.serve.page import CSP, render_page

PEAK_TOP_RIGHT = (0.0, 1.0, 0.0, 0.0)  # a 2 x 2 grid, row-major


def _explanation(window=(0.0, 0.0, 1.0, 1.0)) -> Explanation:
    return Explanation(
        "gradient", (2, 2), window, PEAK_TOP_RIGHT, (("red", (0.0, 0.0, 1.0, 0.0)), ("circle", PEAK_TOP_RIGHT))
    )


def test_the_heat_layer_is_strongest_at_the_maps_peak_and_clear_outside_its_window():
    layer = heat_layer(_explanation(), PEAK_TOP_RIGHT, (80, 40))
    alpha = layer.getchannel("A")
    assert alpha.getpixel((79, 0)) > 150 and alpha.getpixel((0, 39)) == 0
    cropped = heat_layer(_explanation(window=(0.25, 0.0, 0.75, 1.0)), PEAK_TOP_RIGHT, (80, 40)).getchannel("A")
    assert cropped.getpixel((79, 0)) == 0 and cropped.getpixel((59, 0)) > 150  # the window ends at x = 60


def test_write_overlays_writes_one_png_per_hit_and_map(tmp_path):
    photo = tmp_path / "my photo.png"
    Image.new("RGB", (120, 60), "gray").save(photo)
    explained = Hit("q", 1, str(photo), 1.0, 0.5, 1, itm=0.5, explanation=_explanation())
    plain = Hit("q", 2, str(photo), 0.9, 0.4, 2, itm=0.4)
    written = write_overlays([[explained, plain], [explained]], tmp_path / "out")
    assert [p.name for p in written] == [
        f"q{n}-r01-my_photo-{label}.png" for n in (1, 2) for label in ("query", "red", "circle")
    ]
    with Image.open(written[0]) as picture:
        assert picture.size == (256, 128)  # enlarged to MIN_PNG_PX on the long side
        red, green, blue = picture.getpixel((250, 5))
        assert red > 200 and red - blue > 100  # the peak's corner is hot; the image is grey
        assert picture.getpixel((5, 120)) == (128, 128, 128)
    assert overlay_name(3, plain, "a/b") == "q3-r02-my_photo-a_b.png"


def _heat_layers(page: str) -> list[Image.Image]:
    uris = re.findall(r'<img class="heat" data-i="\d+" src="data:image/png;base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(uri))) for uri in uris]


def test_the_contact_sheet_stacks_one_layer_per_map_and_a_radio_group_per_card(tmp_path):
    photo = tmp_path / "a.png"
    Image.new("RGB", (64, 32), "gray").save(photo)
    hits = [
        Hit("q", 1, str(photo), 1.0, 0.5, 1, itm=0.5, explanation=_explanation()),
        Hit("q", 2, str(photo), 0.9, 0.4, 2, itm=0.4),
    ]
    page = render_contact_sheet(hits, thumbnail=lambda path: photo.read_bytes())
    layers = _heat_layers(page)
    assert len(layers) == 3 and layers[0].size == (96, 48)  # the thumbnail's aspect ratio
    assert page.count('type="radio"') == 4 and page.count('name="x1-0"') == 4  # off, query, red, circle
    assert 'value="off" checked' in page and "<script" not in page
    assert '.card:has(input[data-i="2"]:checked) img.heat[data-i="2"]' in page


def test_the_search_page_shows_the_same_toggles_under_its_csp(tmp_path):
    photo = tmp_path / "a.png"
    Image.new("RGB", (50, 50), "gray").save(photo)
    hit = Hit("q", 1, str(photo), 1.0, 0.5, 1, itm=0.5, explanation=_explanation())
    page = render_page(query="q", heading="Results", hits=[hit], explain=True)
    assert len(_heat_layers(page)) == 3 and 'name="x0"' in page and "<script" not in page
    assert "img-src 'self' data:" in CSP and "script-src" not in CSP  # default-src 'none' forbids scripts
    assert '<option value="true" selected>heatmaps</option>' in page
    assert '<option value="false" selected>no heatmaps</option>' in render_page(query="q")  # asked for, not default
