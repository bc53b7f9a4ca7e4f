"""The search page: server-rendered HTML, no script at all, so its CSP can forbid every script.

A GET form is the search box; each result is the contact sheet's card (html_sheet.card_html) whose
thumbnail comes from /thumb/KEY and whose link asks for images similar to it (/?similar=KEY).
"""

from __future__ import annotations

import os
from urllib.parse import urlencode

from bt_search.output.html_sheet import card_html, escape_html, sheet_css
from bt_search.search.hits import Hit
from bt_search.serve.service import MAX_QUERY_CHARS, THUMB_PX, thumb_key

# No script, no frames, no plugins; images, styles and form posts to this origin only.
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_CSS = (
    sheet_css(THUMB_PX)
    + """
form.search { display: flex; gap: .5rem; margin: 0 0 1rem; flex-wrap: wrap; }
form.search input[type=search] { flex: 1 1 24rem; font: inherit; padding: .4rem .6rem; }
form.search select, form.search button { font: inherit; padding: .4rem .6rem; }
.error { color: #b00020; }
.thumb img { width: 100%; height: 100%; }  /* small originals fill the card too (object-fit keeps the shape) */
"""
)


def render_page(
    *,
    query: str = "",
    rerank: bool = True,
    heading: str = "",
    hits: list[Hit] | None = None,
    generation: int = 0,
    error: str = "",
) -> str:
    """The whole page; `hits` None means no search was asked for yet."""
    body = [f"<h1>bt-search</h1>\n{_form(query, rerank)}"]
    if error:
        body.append(f'<p class="error">{escape_html(error)}</p>')
    if hits is not None:
        body.append(f"<h2>{escape_html(heading)}</h2>")
        body.append(
            f'<p class="summary">{len(hits)} result{"" if len(hits) == 1 else "s"}; click an image for similar ones</p>'
        )
        cards = "\n".join(_card(hit, generation) for hit in hits)
        body.append(f'<ol class="cards">\n{cards}\n</ol>' if hits else '<p class="empty">No results.</p>')
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape_html(heading or 'bt-search')}</title>\n"
        '<link rel="stylesheet" href="/page.css">\n</head>\n<body>\n' + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _form(query: str, rerank: bool) -> str:
    selected = ("", " selected") if rerank else (" selected", "")
    return (
        '<form class="search" method="get" action="/" role="search">'
        f'<input type="search" name="q" value="{escape_html(query)}" maxlength="{MAX_QUERY_CHARS}" '
        'placeholder="describe the image you are looking for" aria-label="query" autofocus>'
        '<select name="rerank" aria-label="ranking">'
        f'<option value="true"{selected[1]}>ITM rerank</option><option value="false"{selected[0]}>cosine only</option>'
        '</select><button type="submit">Search</button></form>'
    )


def _card(hit: Hit, generation: int) -> str:
    key = thumb_key(hit.path)
    name = escape_html(os.path.basename(hit.path) or hit.path)
    image = f'<img src="/thumb/{key}?g={int(generation)}" alt="{name}">'
    return card_html(hit, image, "/?" + urlencode({"similar": key}))
