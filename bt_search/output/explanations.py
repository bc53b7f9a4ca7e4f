"""Explanations (search/explain.py) as pictures: heat overlays as PNG files (`--explain-dir`), and the toggles the
contact sheet and the search page put on each thumbnail.

A heat layer is the map's grid drawn into its window (the model's centre crop) over the image's own aspect ratio,
smoothed bilinearly, from transparent through red to yellow at the peak; outside the window it is transparent.

On the pages, the layers are small PNG `data:` images stacked over the thumbnail, one per map, and a row of radio
buttons ("off", "query", one per word) picks which one shows. CSS alone does it (`.card:has(input:checked)`), so
both pages keep a Content-Security-Policy that forbids every script; a browser without `:has()` shows the
thumbnails without overlays.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, ImageOps

from bt_search.errors import BtSearchError, ImageDecodeError
from bt_search.search.hits import Explanation, Hit

LAYER_PX = 96  # long side of a page's heat layer (the browser scales it smoothly over the thumbnail)
PNG_PX = 512  # long side of an --explain-dir overlay, at most ...
MIN_PNG_PX = 256  # ... and at least
MAX_ALPHA = 190  # opacity of the peak (of 255)
MAX_LAYERS = 32  # maps a card can toggle: the query, then its first 31 words
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def maps_of(explanation: Explanation) -> list[tuple[str, Sequence[float]]]:
    """("query", the whole query's map), then each word's, at most MAX_LAYERS."""
    return [("query", explanation.query), *explanation.words][:MAX_LAYERS]


def heat_layer(explanation: Explanation, values: Sequence[float], size: tuple[int, int]) -> Image.Image:
    """An RGBA layer of `size` (the image's, or a scaled copy's) with the map drawn into its window."""
    rows, cols = explanation.grid
    grid = Image.new("L", (cols, rows))
    grid.putdata([max(0, min(255, round(255 * v))) for v in values])
    width, height = size
    x0, y0, x1, y1 = explanation.window
    box_w, box_h = max(1, round((x1 - x0) * width)), max(1, round((y1 - y0) * height))
    level = grid.resize((box_w, box_h), Image.Resampling.BILINEAR)
    # hot colours: red at low relevance, yellow at the peak; opacity follows the relevance
    red = Image.new("L", level.size, 255)
    green = level.point(lambda v: v)
    blue = Image.new("L", level.size, 0)
    alpha = level.point(lambda v: v * MAX_ALPHA // 255)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste(Image.merge("RGBA", (red, green, blue, alpha)), (round(x0 * width), round(y0 * height)))
    return layer


def overlay(
    path: str, explanation: Explanation, values: Sequence[float], max_side: int = PNG_PX, t: float | None = None
) -> Image.Image:
    """The image at `path` (upright; a video's frame at `t` seconds), at most `max_side` a side, with the map laid
    over it."""
    image = _picture(path, t).convert("RGBA")
    image.thumbnail((max_side, max_side))
    if max(image.size) < MIN_PNG_PX:  # a tiny image (the demo's are 64 px) is enlarged so the map can be read
        scale = MIN_PNG_PX / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    return Image.alpha_composite(image, heat_layer(explanation, values, image.size)).convert("RGB")


def _picture(path: str, t: float | None) -> Image.Image:
    """The image as the model saw it: upright, or a video's frame (the one the indexer kept at `t`)."""
    from bt_search.media.video_reading import frame_at, is_video

    if t is not None or is_video(path):
        return frame_at(path, t or 0.0)
    with Image.open(path) as opened:
        return ImageOps.exif_transpose(opened)


def overlay_name(query_number: int, hit: Hit, label: str) -> str:
    """`q1-r01-img_237-red.png`: the query's position, the rank, the image's name and the map's label."""
    stem = _SAFE.sub("_", os.path.splitext(os.path.basename(hit.path))[0])[:40] or "image"
    return f"q{query_number}-r{int(hit.rank):02d}-{stem}-{_SAFE.sub('_', label)}.png"


def write_overlays(results: Iterable[Sequence[Hit]], directory: str | os.PathLike[str]) -> list[Path]:
    """Write one PNG per explained hit and map (the whole query, then each word) into `directory` (made if
    needed); the paths written, in order. Hits without an explanation, or whose file is gone, are passed over."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BtSearchError(f"cannot write explanations to {folder}: {err.strerror or err}") from err
    written = []
    for number, hits in enumerate(results, start=1):
        for hit in hits:
            if hit.explanation is None:
                continue
            for label, values in maps_of(hit.explanation):
                try:
                    picture = overlay(hit.path, hit.explanation, values, t=hit.t)
                except (OSError, ImageDecodeError):
                    break
                target = folder / overlay_name(number, hit, label)
                picture.save(target, format="PNG", optimize=True)
                written.append(target)
    return written


def layer_uri(explanation: Explanation, values: Sequence[float], aspect: float) -> str:
    """A page's heat layer as a PNG `data:` URI, LAYER_PX on its long side at the thumbnail's `aspect` (w / h)."""
    size = (LAYER_PX, max(1, round(LAYER_PX / aspect))) if aspect >= 1 else (max(1, round(LAYER_PX * aspect)), LAYER_PX)
    buffer = io.BytesIO()
    heat_layer(explanation, values, size).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_aspect(path: str, t: float | None = None) -> float:
    """Width / height of the image as decoded (EXIF orientation applied; a video's frame at `t`), from its header
    where it has one; 1 when unreadable."""
    from bt_search.media.video_reading import is_video

    try:
        if t is not None or is_video(path):
            width, height = _picture(path, t).size
        else:
            with Image.open(path) as img:
                width, height = img.size
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    width, height = height, width
    except (OSError, ValueError, SyntaxError, ImageDecodeError):
        return 1.0
    return width / height if height else 1.0


def card_parts(hit: Hit, group: str) -> tuple[str, str]:
    """(layers, picker) markup for a card: the heat layers to put over its thumbnail (inside the thumbnail's
    frame) and the radio buttons that pick one. `group` names the card's radio group (unique on the page). Both
    empty for a hit without an explanation."""
    explanation = hit.explanation
    if explanation is None:
        return "", ""
    aspect = image_aspect(hit.path, hit.t)
    layers, choices = [], [f'<label><input type="radio" name="{_esc(group)}" value="off" checked>off</label>']
    for position, (label, values) in enumerate(maps_of(explanation)):
        layers.append(f'<img class="heat" data-i="{position}" src="{layer_uri(explanation, values, aspect)}" alt="">')
        choices.append(
            f'<label><input type="radio" name="{_esc(group)}" value="{_esc(label)}" data-i="{position}">'
            f"{_esc(label)}</label>"
        )
    picker = f'<fieldset class="words" title="where each word matched">{"".join(choices)}</fieldset>'
    return "".join(layers), picker


def picker_css() -> str:
    """The rules that show the picked layer (one per position: CSS cannot match a value to a value)."""
    shown = ",\n".join(f'.card:has(input[data-i="{i}"]:checked) img.heat[data-i="{i}"]' for i in range(MAX_LAYERS))
    return (
        ".frame { position: relative; display: block; }\n"
        ".frame img.heat { position: absolute; inset: 0; width: 100%; height: 100%; display: none; "
        "pointer-events: none; }\n"
        f"{shown} {{ display: block; }}\n"
        "fieldset.words { border: 0; margin: 0 0 .3rem; padding: 0; display: flex; flex-wrap: wrap; gap: .15rem; "
        "font-size: 12px; }\n"
        "fieldset.words label { border: 1px solid #8886; border-radius: 3px; padding: 0 .3rem; cursor: pointer; }\n"
        "fieldset.words label:has(input:checked) { background: #f5c518; color: #000; }\n"
        "fieldset.words input { position: absolute; opacity: 0; width: 1px; height: 1px; }\n"
    )


def _esc(text: str) -> str:
    return html.escape(text, quote=True)
