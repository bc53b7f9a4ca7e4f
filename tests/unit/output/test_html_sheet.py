"""The contact sheet: structure, escaping, thumbnails, placeholders, page size, atomic write."""

from __future__ import annotations

import base64
import io
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from bt_search.errors import BtSearchError
from bt_search.output.html_sheet import make_thumbnail, render_contact_sheet, write_contact_sheet
from bt_search.search.hits import Hit

PAYLOAD_NAME = "<img src=x onerror=alert(1)>.png"
DATA_PREFIX = "data:image/jpeg;base64,"
FAKE_COLOR = (20, 90, 200)


class Sheet(HTMLParser):
    """Just enough of the page's structure to assert on: sections, cards, every tag seen."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: list[dict] = []
        self.title = ""
        self._text_sink: list[str] | None = None
        self._in_title = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        classes = (attributes.get("class") or "").split()
        if tag == "section":
            self.sections.append({"query": "", "cards": []})
        elif tag == "h2":
            self._text_sink = []
        elif tag == "title":
            self._in_title = True
        elif tag == "li" and "card" in classes:
            card = {"attrs": attributes, "imgs": [], "links": [], "text": []}
            self.sections[-1]["cards"].append(card)
            self._text_sink = card["text"]
        elif tag == "img":
            self.sections[-1]["cards"][-1]["imgs"].append(attributes)
        elif tag == "a" and self._text_sink is not None:
            self.sections[-1]["cards"][-1]["links"].append(attributes)

    def handle_endtag(self, tag):
        if tag == "h2":
            self.sections[-1]["query"] = "".join(self._text_sink or [])
            self._text_sink = None
        elif tag == "li":
            self._text_sink = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._text_sink is not None:
            self._text_sink.append(data)


def card_text(card: dict) -> str:
    return " ".join(" ".join(card["text"]).split())


def jpeg_bytes(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def decode_data_uri(src: str) -> Image.Image:
    assert src.startswith(DATA_PREFIX)
    image = Image.open(io.BytesIO(base64.b64decode(src[len(DATA_PREFIX) :], validate=True)))
    assert image.format == "JPEG"
    return image


def fake_thumbnail(path: str) -> bytes:
    if "missing" in path:
        raise FileNotFoundError(path)
    if "broken" in path:
        raise OSError("cannot identify image file")
    return jpeg_bytes(FAKE_COLOR)


def noisy_image(path: Path, side: int = 1024) -> None:
    """A big image whose thumbnail is still pure noise: the worst case for JPEG size."""
    noise = Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3))
    noise.resize((side, side), Image.Resampling.NEAREST).save(path, "JPEG", quality=95)


def test_sections_per_query_in_input_order_and_cards_in_rank_order():
    hits = [
        Hit("dogs", 2, "/pics/d2.jpg", 0.61, 0.30, 1),
        Hit("cats", 1, "/pics/c1.jpg", 0.9123, 0.2875, 7),
        Hit("dogs", 1, "/pics/d1.jpg", 0.88, 0.25, 2),
        Hit("birds", 1, "/pics/b1.jpg", 0.70, 0.40, 1),
        Hit("cats", 2, "/pics/c2.jpg", 0.5, 0.31, 1),
    ]
    sheet = Sheet(render_contact_sheet(hits, thumbnail=fake_thumbnail))

    assert [s["query"] for s in sheet.sections] == ["dogs", "cats", "birds"]
    dogs, cats, _ = sheet.sections
    assert [c["attrs"]["data-rank"] for c in dogs["cards"]] == ["1", "2"]
    assert [c["links"][0]["href"] for c in dogs["cards"]] == ["file:///pics/d1.jpg", "file:///pics/d2.jpg"]

    first_cat = card_text(cats["cards"][0])
    assert "#1 (was #7 by cosine)" in first_cat
    assert "score 0.9123" in first_cat and "cosine 0.2875" in first_cat
    assert "#2 (was #1 by cosine)" in card_text(cats["cards"][1])
    assert "#1 (also #1 by cosine)" in card_text(sheet.sections[2]["cards"][0])

    img = cats["cards"][0]["imgs"][0]
    assert decode_data_uri(img["src"]).getpixel((5, 5)) == pytest.approx(FAKE_COLOR, abs=4)
    assert sheet.title == "bt-search results"


def test_page_is_self_contained_with_strict_csp():
    page = render_contact_sheet([Hit("q", 1, "/a.jpg", 0.5, 0.5, 1)], thumbnail=fake_thumbnail)
    sheet = Sheet(page)
    csp = [a["content"] for _, a in sheet.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'"]
    assert not [t for t, _ in sheet.tags if t in ("script", "link", "iframe", "object")]
    sources = [a.get("src") for t, a in sheet.tags if "src" in a]
    assert sources and all(s.startswith(DATA_PREFIX) for s in sources)
    assert "http://" not in page and "https://" not in page


def test_user_text_is_escaped():
    query = "<script>alert('q')</script> & \"quotes\""
    path = f"/tmp/evil/{PAYLOAD_NAME}"
    quoted_path = '/tmp/evil/a" onmouseover="alert(2).png'
    hits = [Hit(query, 1, path, 0.5, 0.5, 1), Hit(query, 2, quoted_path, 0.4, 0.4, 2)]
    page = render_contact_sheet(hits, thumbnail=fake_thumbnail, title="<b>my</b> title")
    sheet = Sheet(page)

    assert [a for t, a in sheet.tags if t == "img" and a.get("src") == "x"] == []
    assert not [t for t, _ in sheet.tags if t in ("script", "b")]
    assert not [a for _, a in sheet.tags if "onerror" in a or "onmouseover" in a]
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in page
    assert sheet.sections[0]["query"] == query
    assert sheet.title == "<b>my</b> title"
    evil_card, quoted_card = sheet.sections[0]["cards"]
    assert PAYLOAD_NAME in card_text(evil_card)
    assert quoted_card["links"][1]["title"] == quoted_path  # the quote stayed inside the attribute
    assert evil_card["links"][0]["href"] == Path(path).as_uri()
    assert "<" not in evil_card["links"][0]["href"]


def test_missing_and_unreadable_files_get_placeholders():
    hits = [
        Hit("q", 1, "/gone/missing <b>.jpg", 0.5, 0.5, 1),
        Hit("q", 2, "/pics/broken.jpg", 0.4, 0.4, 2),
        Hit("q", 3, "/pics/fine.jpg", 0.3, 0.3, 3),
    ]
    page = render_contact_sheet(hits, thumbnail=fake_thumbnail)
    missing, broken, fine = Sheet(page).sections[0]["cards"]
    assert missing["imgs"] == [] and "missing: missing <b>.jpg" in card_text(missing)
    assert "missing: missing &lt;b&gt;.jpg" in page
    assert broken["imgs"] == [] and "unreadable: broken.jpg" in card_text(broken)
    assert len(fine["imgs"]) == 1


def test_empty_results():
    sheet = Sheet(render_contact_sheet([], thumbnail=fake_thumbnail))
    assert sheet.sections == []
    assert sheet.title == "bt-search results"


def test_written_sheet_has_real_thumbnails(tmp_path):
    wide = tmp_path / "wide photo #1.jpg"
    Image.new("RGB", (640, 320), (200, 30, 30)).save(wide)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.new("RGB", (400, 200), (30, 200, 30)).save(rotated, exif=exif)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    hits = [
        Hit("red", 1, str(wide), 0.9, 0.3, 2),
        Hit("red", 2, str(rotated), 0.8, 0.35, 1),
        Hit("red", 3, str(garbage), 0.7, 0.2, 3),
        Hit("red", 4, str(tmp_path / "deleted.jpg"), 0.6, 0.1, 4),
    ]
    out = tmp_path / "sheet.html"
    write_contact_sheet(hits, out, thumb_px=120)

    cards = Sheet(out.read_text(encoding="utf-8")).sections[0]["cards"]
    wide_thumb = decode_data_uri(cards[0]["imgs"][0]["src"])
    assert wide_thumb.size == (120, 60)
    assert wide_thumb.getpixel((60, 30)) == pytest.approx((200, 30, 30), abs=8)
    assert decode_data_uri(cards[1]["imgs"][0]["src"]).size == (60, 120)  # EXIF applied: portrait
    assert "unreadable: garbage.jpg" in card_text(cards[2])
    assert "missing: deleted.jpg" in card_text(cards[3])
    assert cards[0]["links"][0]["href"] == wide.as_uri() and "%23" in wide.as_uri()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".html", ".tmp")) == ["sheet.html"]


def test_thumbnail_respects_byte_cap_and_size(tmp_path):
    path = tmp_path / "noise.jpg"
    noisy_image(path)
    for cap in (20_000, 6_000, 1_500):
        data = make_thumbnail(str(path), thumb_px=160, max_bytes=cap)
        image = Image.open(io.BytesIO(data))
        assert len(data) <= cap and image.format == "JPEG"
        assert max(image.size) <= 160
    assert max(Image.open(io.BytesIO(make_thumbnail(str(path), max_bytes=20_000))).size) == 160


def test_transparency_becomes_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(path)
    thumb = Image.open(io.BytesIO(make_thumbnail(str(path))))
    assert thumb.getpixel((25, 25)) == pytest.approx((255, 255, 255), abs=3)


def test_page_stays_small_for_ten_queries_of_ten_big_noisy_images(tmp_path):
    paths = []
    for i in range(100):
        path = tmp_path / f"noise{i:03d}.jpg"
        noisy_image(path)
        paths.append(str(path))
    hits = [
        Hit(f"query {q}", rank, paths[q * 10 + rank - 1], 1 - rank / 20, 0.3, rank)
        for q in range(10)
        for rank in range(1, 11)
    ]
    out = tmp_path / "sheet.html"
    write_contact_sheet(hits, out)

    size = out.stat().st_size
    assert size < 2_000_000
    sheet = Sheet(out.read_text(encoding="utf-8"))
    thumbs = [decode_data_uri(c["imgs"][0]["src"]) for s in sheet.sections for c in s["cards"]]
    assert len(thumbs) == 100
    assert all(max(t.size) == 160 for t in thumbs)  # quality gave way before size did
    assert size > 500_000  # the budget was used, not thrown away


def test_write_replaces_existing_file(tmp_path):
    out = tmp_path / "sheet.html"
    out.write_text("old")
    write_contact_sheet([], out, title="fresh")
    assert Sheet(out.read_text(encoding="utf-8")).title == "fresh"


def test_write_to_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(BtSearchError, match="exists and is writable"):
        write_contact_sheet([], tmp_path / "no" / "such" / "sheet.html")


def test_undecodable_file_name_shows_replacement_but_links_exactly():
    path = "/pics/caf\udce9.jpg"  # b"caf\xe9.jpg", Latin-1 bytes, as os.listdir hands it over
    page = render_contact_sheet([Hit("q", 1, path, 0.5, 0.5, 1)], thumbnail=fake_thumbnail)
    page.encode("utf-8")  # writable as UTF-8: no lone surrogate left
    card = Sheet(page).sections[0]["cards"][0]
    assert card["links"][0]["href"] == "file:///pics/caf%E9.jpg"
    assert "caf\ufffd.jpg" in card_text(card) and card["links"][-1]["title"] == "/pics/caf\ufffd.jpg"


def test_cards_show_paths_under_the_common_folder_dates_and_itm(tmp_path):
    photos = tmp_path / "photos" / "2021"
    (photos / "summer").mkdir(parents=True)
    undated = photos / "summer" / "beach_with_a_long_name.jpg"
    undated.write_bytes(jpeg_bytes(FAKE_COLOR))
    os.utime(undated, (1_600_000_000, 1_600_000_000))
    hits = [
        Hit("beach", 1, str(photos / "dated.jpg"), 1.2, 0.3, 2, taken_at="2021-07-04T10:11:12+02:00", itm=0.9),
        Hit("beach", 2, str(undated), 1.1, 0.35, 1, itm=0.75),
        Hit("beach", 3, str(photos / "missing.jpg"), 0.3, 0.3, 3),  # gone, not reranked: no date, no itm
    ]
    page = render_contact_sheet(hits, thumbnail=fake_thumbnail)
    sheet = Sheet(page)
    assert f'3 results under <span class="folder">{photos}/</span>' in page and page.count(f"{photos}/<") == 1
    dated, modified, gone = (card_text(card) for card in sheet.sections[0]["cards"])
    assert "score 1.2000 itm 0.9000 cosine 0.3000 taken 2021-07-04 10:11 dated.jpg" in dated
    local = __import__("datetime").datetime.fromtimestamp(1_600_000_000).isoformat(timespec="minutes")
    assert f"itm 0.7500 cosine 0.3500 modified {local.replace('T', ' ')} summer/" in modified
    assert "itm" not in gone and "taken" not in gone and "modified" not in gone
    assert ">summer/<wbr>beach_with_a_long_name.jpg</a>" in page  # breaks after a "/" only
    assert sheet.sections[0]["cards"][1]["links"][-1]["title"] == str(undated)  # the whole path on hover


@pytest.mark.parametrize(
    ("paths", "folder"),
    [
        (["/a/b/c.jpg", "/a/b/d/e.jpg", "/a/b/x.jpg"], "/a/b/"),
        (["/a/bc/x.jpg", "/a/b/x.jpg"], "/a/"),  # a common prefix that is not a whole folder name
        (["/a/x.jpg", "/b/y.jpg"], ""),  # nothing but the root
        (["/a/b/only.jpg"], "/a/b/"),
        (["s3://bucket/p/a.jpg", "s3://bucket/p/q/b.jpg"], "s3://bucket/p/"),
        (["s3://one/a.jpg", "s3://two/b.jpg"], ""),
        ([], ""),
    ],
)
def test_common_folder(paths, folder):
    from bt_search.output.html_sheet import common_folder, relative_to

    assert common_folder(paths) == folder
    assert all(folder + relative_to(path, folder) == path for path in paths) if folder else True
