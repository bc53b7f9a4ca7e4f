"""The search page: server-rendered HTML, no script at all, so its CSP can forbid every script.

A GET form is the search box, with a date range and an order; the header names the index and its size. Each
result is the contact sheet's card (html_sheet.card_html): its thumbnail comes from /thumb/KEY and links to
images similar to it (/?similar=KEY, in the same date range), its path (relative to the folder holding every
indexed image) to the full-size view /image/KEY. Both keys name rows this server returned, nothing else.

A reranked search not answered yet shows its cosine shortlist first, in a page that asks at once (meta refresh)
for the same search with `ranked=1`: the browser keeps the shortlist on screen until the reranked page arrives.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

from bt_search.output.explanations import card_parts
from bt_search.output.html_sheet import card_html, escape_html, sheet_css
from bt_search.search.hits import Hit
from bt_search.serve.service import MAX_QUERY_CHARS, THUMB_PX, thumb_key

# No script, no frames, no plugins; images (and the explanations' heat layers, as data: PNGs), styles and form
# posts to this origin only.
CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
PAGE_CSS = (
    sheet_css(THUMB_PX)
    + """
header.index { display: flex; align-items: baseline; gap: 1rem; flex-wrap: wrap; margin: 0 0 .75rem; }
header.index h1 { margin: 0; }
.facts { color: GrayText; margin: 0; overflow-wrap: anywhere; }
form.search { display: flex; gap: .5rem; margin: 0 0 1rem; flex-wrap: wrap; align-items: center; }
form.search input[type=search] { flex: 1 1 24rem; font: inherit; padding: .4rem .6rem; }
form.search input[type=date], form.search select, form.search button { font: inherit; padding: .35rem .5rem; }
form.search label { display: flex; align-items: center; gap: .3rem; color: GrayText; }
.error { color: #b00020; }
.pending { color: GrayText; }
"""
)
SORT_LABELS = {"relevance": "best match first", "date": "oldest first"}


def render_page(
    *,
    query: str = "",
    rerank: bool = True,
    heading: str = "",
    hits: list[Hit] | None = None,
    generation: int = 0,
    error: str = "",
    index: dict[str, Any] | None = None,
    filters: dict[str, str] | None = None,
    refresh: str = "",
    explain: bool = False,
) -> str:
    """The whole page; `hits` None means no search was asked for yet. `index`: Service.page_facts (name, images,
    folder); `filters`: the date range and order asked for (`after`, `before`, `sort`), kept in the form and in
    the links to similar images. `refresh`: the URL of the reranked result when `hits` are the cosine shortlist
    shown first; the page asks for it at once (a meta refresh, no script) and stays on screen until it comes."""
    index = index or {}
    filters = filters or {}
    body = [_header(index), _form(query, rerank, filters, explain)]
    if error:
        body.append(f'<p class="error">{escape_html(error)}</p>')
    if hits is not None:
        body.append(f"<h2>{escape_html(heading)}</h2>")
        if refresh:
            body.append(
                '<p class="pending" role="status">Cosine shortlist, best first; reranking it now: the reranked order '
                f'replaces it when ready (<a href="{escape_html(refresh)}">reranked order</a>)</p>'
            )
        body.append(
            f'<p class="summary">{len(hits)} result{"" if len(hits) == 1 else "s"}; click an image for similar '
            "ones, its name for the full-size image</p>"
        )
        folder = index.get("folder", "")
        cards = "\n".join(_card(hit, generation, folder, filters, f"x{n}") for n, hit in enumerate(hits))
        body.append(f'<ol class="cards">\n{cards}\n</ol>' if hits else '<p class="empty">No results.</p>')
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        + (f'<meta http-equiv="refresh" content="0; url={escape_html(refresh)}">\n' if refresh else "")
        + f"<title>{escape_html(heading or 'bt-search')}</title>\n"
        '<link rel="stylesheet" href="/page.css">\n</head>\n<body>\n' + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _header(index: dict[str, Any]) -> str:
    facts = []
    if "name" in index:
        facts.append(f'index <b class="name">{escape_html(index["name"])}</b>')
    if "images" in index:
        count = int(index["images"])
        facts.append(f'<span class="count">{count:,} image{"" if count == 1 else "s"}</span>')
    if index.get("folder"):
        facts.append(f'under <span class="folder">{escape_html(index["folder"])}</span>')
    if index.get("indexing"):  # serve --watch: a batch of new or changed files is being embedded
        count = int(index["indexing"])
        facts.append(f'<span class="indexing">indexing {count:,} new file{"" if count == 1 else "s"}</span>')
    shown = f'<p class="facts">{" · ".join(facts)}</p>' if facts else ""
    return f'<header class="index"><h1>bt-search</h1>{shown}</header>'


def _form(query: str, rerank: bool, filters: dict[str, str], explain: bool = False) -> str:
    selected = ("", " selected") if rerank else (" selected", "")
    sort = filters.get("sort", "relevance")
    orders = "".join(
        f'<option value="{value}"{" selected" if value == sort else ""}>{label}</option>'
        for value, label in SORT_LABELS.items()
    )
    dates = "".join(
        f'<label>{name} <input type="date" name="{name}" value="{escape_html(filters.get(name, ""))}"></label>'
        for name in ("after", "before")
    )
    return (
        '<form class="search" method="get" action="/" role="search">'
        f'<input type="search" name="q" value="{escape_html(query)}" maxlength="{MAX_QUERY_CHARS}" '
        'placeholder="describe the image you are looking for" aria-label="query" autofocus>'
        '<select name="rerank" aria-label="ranking">'
        f'<option value="true"{selected[1]}>ITM rerank</option><option value="false"{selected[0]}>cosine only</option>'
        f'</select>{dates}<select name="sort" aria-label="order">{orders}</select>{_explain_select(explain)}'
        '<button type="submit">Search</button></form>'
    )


def _card(hit: Hit, generation: int, folder: str, filters: dict[str, str], group: str = "") -> str:
    key = thumb_key(hit.path, hit.t)  # a video's hit: its frame
    name = escape_html(os.path.basename(hit.path) or hit.path)
    image = f'<img src="/thumb/{key}?g={int(generation)}" alt="{name}">'
    layers, picker = card_parts(hit, group)  # where each word matched (explanations.py), when the hit has it
    if layers:
        image = f'<span class="frame">{image}{layers}</span>'
    full = f"/image/{key}?g={int(generation)}"
    # A video's frame opens its full view: there is no image query by a video.
    similar = full if hit.t is not None else "/?" + urlencode({"similar": thumb_key(hit.path), **filters})
    return card_html(hit, image, image_href=similar, path_href=full, folder=folder, picker_html=picker)


def _explain_select(explain: bool) -> str:
    """Whether reranked hits carry heatmaps of where each word matched (search/explain.py)."""
    selected = (" selected", "") if explain else ("", " selected")
    return (
        '<select name="explain" aria-label="heatmaps">'
        f'<option value="false"{selected[1]}>no heatmaps</option><option value="true"{selected[0]}>heatmaps</option>'
        "</select>"
    )
