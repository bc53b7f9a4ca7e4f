"""A self-contained HTML contact sheet of search results.

One page, no external resources: one section per query (in input order), one card per hit in rank
order, each with an inline JPEG thumbnail (a `data:` URI) in its own aspect ratio, its rank and cosine-shortlist
rank (so the rerank's effect shows), the score (ITM + cosine by default), the ITM probability, the cosine, the
capture date (else the file's modification date) and a `file://` link to the image, named relative to the
hits' common folder (shown once at the top). The search page (serve/page.py) shows the same cards.

`render_contact_sheet` is the pure part: thumbnails come from a function argument. `write_contact_sheet`
makes real thumbnails with Pillow, keeps the whole page under a size budget and writes it atomically.
Every user-controlled string (query text, paths, title) is HTML-escaped, and a strict
Content-Security-Policy forbids scripts and any fetch other than `data:` images as a second fence.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path

from PIL import Image, ImageOps

from bt_search.errors import BtSearchError, ImageDecodeError, UsageError
from bt_search.media.scan import RAW_EXTENSIONS
from bt_search.media.video_reading import frame_at, is_video
from bt_search.output.explanations import card_parts, picker_css
from bt_search.output.hits import frame_time_text
from bt_search.search.hits import Hit

# image path -> JPEG bytes; raises OSError & co. when unreadable. A video frame's hit calls it with (path, t).
Thumbnailer = Callable[..., bytes]

DEFAULT_TITLE = "bt-search results"
MAX_PAGE_BYTES = 2_000_000
_QUALITIES = (85, 75, 60, 45, 30, 20)
_MIN_SIDE = 16  # below this, shrinking further stops paying off
_MIN_THUMB_BYTES = 1_000  # floor of the per-thumbnail budget, however many hits share the page
# What a bad file can raise while Pillow opens/decodes it (UnidentifiedImageError is an OSError).
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

_SURROGATE = re.compile("[\ud800-\udfff]")
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
:root { color-scheme: light dark; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
h2 { font-size: 1.1rem; margin: 2rem 0 .75rem; overflow-wrap: anywhere; }
.summary, .empty { color: GrayText; margin: 0; }
ol.cards { list-style: none; padding: 0; margin: 0; display: grid; gap: .75rem;
  grid-template-columns: repeat(auto-fill, minmax(calc(var(--thumb) + 1.5rem), 1fr)); }
.card { border: 1px solid #8884; border-radius: 6px; padding: .6rem; }
.thumb { display: block; margin: 0 0 .4rem; }
/* the image's own aspect ratio, no band around it: as wide as the card, its height follows */
.thumb img { display: block; width: 100%; height: auto; max-height: calc(2 * var(--thumb)); object-fit: contain; }
.placeholder { display: flex; align-items: center; justify-content: center; width: 100%;
  height: var(--thumb); box-sizing: border-box; padding: .5rem; background: #8882; color: GrayText; font-size: 12px;
  text-align: center; overflow-wrap: anywhere; }
.rank { font-weight: 600; }
.moved { font-size: 12px; color: GrayText; }
.moved.up { color: #2a7d2a; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 0 .5rem; margin: .3rem 0; font-size: 12px; }
dt { color: GrayText; }
dd { margin: 0; font-variant-numeric: tabular-nums; }
/* paths break after a "/" (a <wbr> there); inside a name only when the name alone is wider than the card */
a.path { font-size: 12px; overflow-wrap: break-word; word-break: normal; }
.folder { overflow-wrap: anywhere; }
/* near-duplicates folded into a card: its thumbnail drawn as the top of a stack, the others listed under it */
.card.stacked .thumb { box-shadow: 4px 4px 0 -1px Canvas, 4px 4px 0 0 #888a, 8px 8px 0 -1px Canvas, 8px 8px 0 0 #8886;
  margin-right: 8px; margin-bottom: calc(.4rem + 8px); }
details.similar { font-size: 12px; margin-top: .3rem; }
details.similar summary { cursor: pointer; font-weight: 600; }
details.similar ul { margin: .2rem 0 0; padding-left: 1rem; overflow-wrap: anywhere; }
"""


def write_contact_sheet(
    hits: Sequence[Hit],
    out_path: str | os.PathLike[str],
    *,
    thumb_px: int = 160,
    max_bytes_per_thumb: int = 20_000,
    title: str = DEFAULT_TITLE,
    max_page_bytes: int = MAX_PAGE_BYTES,
) -> None:
    """Write the contact sheet for `hits` to `out_path` (atomically).

    Each thumbnail is a JPEG of at most `thumb_px` a side and `max_bytes_per_thumb` bytes; that cap
    shrinks as needed so the page stays under about `max_page_bytes` (best effort: a floor of 1 kB a
    thumbnail still applies to huge result sets).
    """
    if thumb_px < 1 or max_bytes_per_thumb < 1:
        raise UsageError("thumbnail size and byte cap must be positive")
    per_thumb = min(max_bytes_per_thumb, _thumb_budget(hits, max_page_bytes, thumb_px, title))

    # The same image often answers several queries: encode it once.
    @cache
    def thumbnail(path: str, t: float | None = None) -> bytes:
        return make_thumbnail(path, thumb_px=thumb_px, max_bytes=per_thumb, t=t)

    page = render_contact_sheet(hits, thumbnail=thumbnail, thumb_px=thumb_px, title=title)
    try:
        _write_atomically(Path(out_path), page)
    except OSError as err:
        raise BtSearchError(
            f"cannot write the contact sheet to {out_path}: {err.strerror or err}; "
            "check that its folder exists and is writable"
        ) from err


def render_contact_sheet(
    hits: Sequence[Hit],
    *,
    thumbnail: Thumbnailer,
    thumb_px: int = 160,
    title: str = DEFAULT_TITLE,
) -> str:
    """The page as a string. `thumbnail(path)` returns JPEG bytes; if it raises FileNotFoundError the
    card says "missing: <name>", any other read/decode error gives "unreadable: <name>"."""
    groups = _group_by_query(hits)
    folder = common_folder(hit.path for hit in hits)
    under = f' under <span class="folder">{_esc(folder)}</span>' if folder else ""
    body = [
        f"<h1>{_esc(title)}</h1>",
        f'<p class="summary">{len(groups)} {_plural(len(groups), "query", "queries")}, '
        f"{len(hits)} {_plural(len(hits), 'result', 'results')}{under}</p>",
    ]
    if not hits:
        body.append('<p class="empty">No results.</p>')
    for number, (query, query_hits) in enumerate(groups.items(), start=1):
        body.append(_section(number, query, query_hits, thumbnail, folder))
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n"
        f"<style>{sheet_css(thumb_px)}</style>\n"
        "</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def make_thumbnail(path: str, *, thumb_px: int = 160, max_bytes: int = 20_000, t: float | None = None) -> bytes:
    """A JPEG of `path`, upright (EXIF), at most `thumb_px` a side, under `max_bytes` where possible; of a
    video, its frame at `t` seconds (decoded as the indexer and the rerank decode it).

    Lowers the quality first, then halves the size, down to `_MIN_SIDE` pixels.
    """
    if t is not None or is_video(path):
        try:
            im = frame_at(path, t or 0.0)  # the frame the indexer kept at t (media/video_reading.py)
        except ImageDecodeError as err:
            raise OSError(err.reason) from None  # unreadable, as a broken image is
    elif os.path.splitext(path)[1].lower() in RAW_EXTENSIONS:  # LibRaw, as the indexer reads it: the preview
        # when big enough, turned once. Imported here: a served query's sheet (the light client) loads no numpy.
        from bt_search.media.images import Preprocessing, load_rgb

        try:
            im, _ = load_rgb(path, prep=Preprocessing(size=thumb_px, crop=thumb_px))
        except ImageDecodeError as err:
            raise OSError(err.reason) from None
    else:
        with Image.open(path) as opened:
            opened.draft("RGB", (thumb_px, thumb_px))  # JPEG: let the decoder downscale, much faster
            im = _to_rgb(ImageOps.exif_transpose(opened))
    im.thumbnail((thumb_px, thumb_px))
    while True:
        for quality in _QUALITIES:
            data = _encode_jpeg(im, quality)
            if len(data) <= max_bytes:
                return data
        if max(im.size) <= _MIN_SIDE:
            return data
        im = im.resize((max(1, im.width // 2), max(1, im.height // 2)))


def _thumb_budget(hits: Sequence[Hit], max_page_bytes: int, thumb_px: int, title: str) -> int:
    """Bytes each thumbnail may take so the page fits `max_page_bytes` (base64 costs 4/3)."""
    if not hits:
        return max_page_bytes
    markup = render_contact_sheet(hits, thumbnail=lambda *_: b"", thumb_px=thumb_px, title=title)
    spare = max_page_bytes - len(markup.encode("utf-8"))
    return max(_MIN_THUMB_BYTES, spare * 3 // 4 // len(hits))


def _group_by_query(hits: Sequence[Hit]) -> dict[str, list[Hit]]:
    groups: dict[str, list[Hit]] = {}
    for hit in hits:
        groups.setdefault(hit.query, []).append(hit)
    for group in groups.values():
        group.sort(key=lambda h: h.rank)
    return groups


def _section(number: int, query: str, hits: list[Hit], thumbnail: Thumbnailer, folder: str) -> str:
    cards = "\n".join(_card(hit, thumbnail, folder, f"x{number}-{n}") for n, hit in enumerate(hits))
    return (
        f'<section class="query" id="q{number}">\n<h2>{_esc(query)}</h2>\n'
        f'<ol class="cards">\n{cards}\n</ol>\n</section>'
    )


def _card(hit: Hit, thumbnail: Thumbnailer, folder: str, group: str = "") -> str:
    uri = Path(hit.path).absolute().as_uri() + frame_fragment(hit.t)
    image = _thumb_html(hit, thumbnail)
    layers, picker = card_parts(hit, group) if 'class="placeholder"' not in image else ("", "")
    if layers:
        image = f'<span class="frame">{image}{layers}</span>'
    return card_html(hit, image, image_href=uri, path_href=uri, folder=folder, picker_html=picker)


def frame_fragment(t: float | None) -> str:
    """The media fragment (`#t=12.5`) that opens a video at a frame in a browser or player; "" for an image."""
    return "" if t is None else f"#t={round(float(t), 3):g}"


def card_html(
    hit: Hit, image_html: str, *, image_href: str, path_href: str, folder: str = "", picker_html: str = ""
) -> str:
    """One result card (also the search page's): `image_html` is trusted markup; the links are escaped here. The
    path shows relative to `folder` (a common_folder of the hits or of the index), and breaks only after a "/".
    `picker_html` (trusted: explanations.card_parts) goes under the thumbnail."""
    path = _esc(hit.path)
    shown = _esc(relative_to(hit.path, folder)).replace("/", "/<wbr>")
    itm = "" if hit.itm is None else f'<dt>itm</dt><dd class="itm">{float(hit.itm):.4f}</dd>'
    if hit.t is not None:  # a video's frame: the time it shows
        itm += f'<dt>t</dt><dd class="t">{_esc(frame_time_text(hit.t))}</dd>'
    stacked = f' stacked" data-similar="{len(hit.duplicates)}' if hit.duplicates else ""
    return (
        f'<li class="card{stacked}" data-rank="{int(hit.rank)}" data-shortlist-rank="{int(hit.shortlist_rank)}">'
        f'<a class="thumb" href="{_esc(image_href)}">{image_html}</a>{picker_html}'
        f'<div><span class="rank">#{int(hit.rank)}</span> {_moved_html(hit)}</div>'
        f'<dl><dt>score</dt><dd class="score">{float(hit.score):.4f}</dd>{itm}'
        f'<dt>cosine</dt><dd class="similarity">{float(hit.similarity):.4f}</dd>{_date_html(hit)}</dl>'
        f'<a class="path" href="{_esc(path_href)}" title="{path}">{shown}</a>{_similar_html(hit, folder)}</li>'
    )


def _similar_html(hit: Hit, folder: str) -> str:
    """The near-duplicates folded into the hit ("+N similar"), their paths listed when opened; "" for none."""
    if not hit.duplicates:
        return ""
    items = "".join(f'<li title="{_esc(p)}">{_esc(relative_to(p, folder))}</li>' for p in hit.duplicates)
    return f'<details class="similar"><summary>+{len(hit.duplicates)} similar</summary><ul>{items}</ul></details>'


def _date_html(hit: Hit) -> str:
    """The capture date (EXIF), else the file's modification time (what `after`/`before` compare), else nothing."""
    if hit.taken_at:
        label, full = "taken", hit.taken_at
    else:
        try:
            label, full = "modified", datetime.fromtimestamp(os.stat(hit.path).st_mtime).isoformat(timespec="seconds")
        except (OSError, ValueError):
            return ""
    return f'<dt>{label}</dt><dd class="date" title="{_esc(full)}">{_esc(full[:16].replace("T", " "))}</dd>'


def common_folder(paths: Iterable[str]) -> str:
    """The deepest folder holding every path, with its trailing "/" ("" when they share none but the root):
    the part a person need not read on every card. Only the first and last path in string order decide it (every
    path between them shares their common prefix), so a caller may pass just those two."""
    paths = list(paths)
    if not paths:
        return ""
    prefix = os.path.commonprefix([min(paths), max(paths)])
    folder = prefix[: prefix.rfind("/") + 1]
    return "" if folder in ("", "/") or folder.endswith("://") else folder


def relative_to(path: str, folder: str) -> str:
    """`path` without the leading `folder` (a common_folder), or whole when it is not inside it."""
    return path[len(folder) :] if folder and path.startswith(folder) and len(path) > len(folder) else path


def _moved_html(hit: Hit) -> str:
    was = int(hit.shortlist_rank)
    if was == hit.rank:
        return f'<span class="moved same">(also #{was} by cosine)</span>'
    direction = "up" if hit.rank < was else "down"
    return f'<span class="moved {direction}">(was #{was} by cosine)</span>'


def _thumb_html(hit: Hit, thumbnail: Thumbnailer) -> str:
    path = hit.path
    name = _esc(os.path.basename(path) or path)
    try:
        jpeg = thumbnail(path) if hit.t is None else thumbnail(path, hit.t)
    except FileNotFoundError:
        return _placeholder("missing", name)
    except _UNREADABLE:
        return _placeholder("unreadable", name)
    data = base64.b64encode(jpeg).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{data}" alt="{name}">'


def _placeholder(reason: str, escaped_name: str) -> str:
    return f'<span class="placeholder">{reason}: {escaped_name}</span>'


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on white (a plain convert would turn it black)."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGB", im.size, "white")
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def sheet_css(thumb_px: int) -> str:
    """The sheet's style sheet, for pages that show the same cards."""
    return f":root {{ --thumb: {int(thumb_px)}px; }}{_CSS}{picker_css()}"


def escape_html(text: str) -> str:
    return _esc(text)


def _esc(text: str) -> str:
    """HTML-escape; lone surrogates (undecodable bytes in a file name) become U+FFFD, since they
    cannot be written as UTF-8."""
    text = _SURROGATE.sub("\ufffd", text)
    return html.escape(text, quote=True)


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _write_atomically(path: Path, text: str) -> None:
    # os.open with 0o666 lets the umask decide permissions, like a plain open() would.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
