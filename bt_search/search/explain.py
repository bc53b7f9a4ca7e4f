"""Where each word matched: relevance heatmaps of a reranked hit, from the fusion layers' attention.

BridgeTower's cross-modal text layers attend from every query token to every image patch, and its image layers
from every patch to every token. Three ways to turn that into one [text token x image token] map (`METHODS`):

- "attention" (the default): the last fusion layer's text-to-image attention, heads averaged. No gradients,
  no propagation: the cheapest, and the best at pointing on sample_data.
- "gradient": `relevance` propagates every fusion layer's maps with the rules of Chefer et al. 2021 ("Generic
  Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", eqs. 6-11), from
  identity relevance at the fusion's input (the towers' own layers mix nothing across modalities), each layer's
  maps entering as Ā = mean over heads of (dA ⊙ A)^+, A weighted by the gradient of the ITM log-odds of a match
  (one backward pass through the fusion layers for all K hits). Best on colour words.
- "rollout": the same rules with Ā = mean over heads of A (attention rollout), no gradients. Measured, and
  never ahead of the other two: kept as the gradient method's no-gradient control, for the benchmark.

A map has one row per query token: the whole query's map is the text CLS token's row, a word's map is the mean
of its tokens' rows, each over the image patches (the image CLS dropped). docs/performance.md ("Where each word
matched") measures the three with a pointing game on sample_data.

Explanations are computed for the hits shown only, from the rerank's own states: the query's text states
(computed once per query) and the vision states the rerank kept for the best `top_k` candidates (KeptStates).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from bt_search.errors import UsageError
from bt_search.search.hits import Explanation, Hit

METHODS = ("attention", "gradient", "rollout")
DEFAULT_METHOD = "attention"  # measured best on sample_data: docs/performance.md, "Where each word matched"
DIGITS = 3  # map values are rounded to this many decimals (peak 1): compact in JSON, far finer than a colour map
# Words that are not explained (their maps say little about where things are): articles, prepositions and
# conjunctions, pronouns, and forms of "be".
STOP_WORDS = frozenset(
    "a an the of on in at to by for from with without and or but nor is are was were be been being it its this "
    "that these those there here as into onto over under near next".split()
)
_WORD = re.compile(r"\w+")


def text_to_image(maps, method: str = DEFAULT_METHOD) -> torch.Tensor:
    """[K, T, I]: how much each text token points at each image token, by `method` (see the module docstring)."""
    if method == "attention":
        return maps.text_cross[-1].mean(dim=1)
    return relevance(maps, method)


def relevance(maps, method: str = "gradient") -> torch.Tensor:
    """R_ti [K, T, I]: how relevant each image token is to each text token, after every fusion layer.

    `maps` is an engine.attention.FusionAttention (with gradients for "gradient"). Pure tensor arithmetic.
    """
    if method not in METHODS[1:]:
        raise UsageError(f"`method` must be one of {', '.join(METHODS[1:])}, not {method!r}")
    if method == "gradient" and maps.gradients is None:
        raise ValueError("the gradient method needs FusionAttention with gradients")
    k, t, i = maps.text_cross[0].shape[0], maps.text_cross[0].shape[2], maps.text_cross[0].shape[3]
    eye_t = torch.eye(t).expand(k, t, t)
    eye_i = torch.eye(i).expand(k, i, i)
    r_tt, r_ii = eye_t.clone(), eye_i.clone()
    r_ti, r_it = torch.zeros(k, t, i), torch.zeros(k, i, t)
    for layer in range(len(maps.text_cross)):
        a_tt, a_ti, a_ii, a_it = (_head_mean(maps, kind, layer, method) for kind in maps.KINDS)
        # Both streams' layer `layer` read the same inputs: each takes the other stream's relevance as it came in.
        before_tt, before_ii, before_ti, before_it = r_tt, r_ii, r_ti, r_it
        # text: self-attention (eqs. 6, 7), then cross-attention over the image tokens (eqs. 10, 11)
        r_tt, r_ti = r_tt + a_tt @ r_tt, r_ti + a_tt @ r_ti
        r_ti = r_ti + normalized_self(r_tt).transpose(1, 2) @ a_ti @ normalized_self(before_ii)
        r_tt = r_tt + a_ti @ before_it
        # image: the same, over the text tokens
        r_ii, r_it = r_ii + a_ii @ r_ii, r_it + a_ii @ r_it
        r_it = r_it + normalized_self(r_ii).transpose(1, 2) @ a_it @ normalized_self(before_tt)
        r_ii = r_ii + a_it @ before_ti
    return r_ti


def _head_mean(maps, kind: str, layer: int, method: str) -> torch.Tensor:
    attention = getattr(maps, kind)[layer]
    if method == "gradient":
        attention = (maps.gradients[kind][layer] * attention).clamp(min=0)
    return attention.mean(dim=1)


def normalized_self(r: torch.Tensor) -> torch.Tensor:
    """Chefer's eqs. 8-9: the self-relevance without its identity, rows scaled to sum 1, identity added back (a
    row with nothing beyond the identity stays the identity's)."""
    eye = torch.eye(r.shape[-1]).expand_as(r)
    extra = r - eye
    sums = extra.sum(dim=-1, keepdim=True)
    return torch.where(sums > 0, extra / sums.clamp(min=1e-12), torch.zeros_like(extra)) + eye


def content_words(text: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[str, list[int]]]:
    """The query's content words (lower case, first occurrence order, repeats merged) and the positions of the
    tokens each covers; `offsets` are the tokens' (start, end) characters in `text` ((0, 0) for special ones)."""
    words: dict[str, list[int]] = {}
    for match in _WORD.finditer(text):
        word = match.group().lower()
        if word in STOP_WORDS:
            continue
        tokens = [
            n for n, (start, end) in enumerate(offsets) if end > start and start < match.end() and end > match.start()
        ]
        if tokens:
            words.setdefault(word, []).extend(n for n in tokens if n not in words.get(word, []))
    return list(words.items())


def scaled(values: torch.Tensor) -> tuple[float, ...]:
    """A map as the Explanation holds it: peak 1 (all zero stays zero), rounded to DIGITS."""
    values = values.clamp(min=0)
    peak = float(values.max())
    if peak > 0:
        values = values / peak
    return tuple(round(float(v), DIGITS) for v in values)


def explanations(r_ti: torch.Tensor, words: list[tuple[str, list[int]]], grid: tuple[int, int], windows, method: str):
    """One Explanation per pair from R_ti [K, T, 1 + patches]: the CLS row, and each word's tokens' mean row."""
    patches = r_ti[:, :, 1:]
    found = []
    for pair, window in enumerate(windows):
        word_maps = tuple((word, scaled(patches[pair, tokens].mean(dim=0))) for word, tokens in words)
        found.append(Explanation(method, grid, window, scaled(patches[pair, 0]), word_maps))
    return found


def crop_window(width: int, height: int, prep) -> tuple[float, float, float, float]:
    """The part of a `width` x `height` image the model sees (its preprocessing's centre crop), as fractions of the
    image's width and height: (x0, y0, x1, y1), beyond 0..1 where the crop pads."""
    from bt_search.media.images import resized_shape

    resized_h, resized_w = resized_shape(height, width, prep)

    def span(length: int) -> tuple[float, float]:
        # images.center_crop: the crop starts (length - crop) // 2 in, or the image sits ceil((crop - length) / 2) in
        start = (length - prep.crop) // 2 if length >= prep.crop else -((prep.crop - length + 1) // 2)
        return start / length, (start + prep.crop) / length

    (x0, x1), (y0, y1) = span(resized_w), span(resized_h)
    return (round(x0, 4), round(y0, 4), round(x1, 4), round(y1, 4))


def image_window(path: str, prep, t: float | None = None) -> tuple[float, float, float, float]:
    """crop_window of the image at `path`, upright as it is decoded (EXIF orientation), from its header alone (a
    video's frame at `t`: decoded); the whole image (0, 0, 1, 1) when it cannot be read here (a URL, a file gone
    since the rerank)."""
    from PIL import Image

    from bt_search.errors import ImageDecodeError
    from bt_search.media.video_reading import frame_at, is_video

    if t is not None or is_video(path):
        try:
            frame = frame_at(path, t or 0.0)
        except (OSError, ImageDecodeError):
            return (0.0, 0.0, 1.0, 1.0)
        return crop_window(frame.width, frame.height, prep)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # turned a quarter: decoding swaps the sides
                width, height = height, width
    except (OSError, ValueError, SyntaxError):
        return (0.0, 0.0, 1.0, 1.0)
    return crop_window(width, height, prep)


def explain_pairs(
    engine, text_states, states: torch.Tensor, windows, method: str = DEFAULT_METHOD
) -> list[Explanation]:
    """Explanations of one query (its engine.text_states) against K images' vision states [K, ...]."""
    from bt_search.engine.attention import fusion_attention

    maps = fusion_attention(engine, text_states, states, gradients=method == "gradient")
    encoded = engine.tokenizer(
        [text_states.text], return_offsets_mapping=True, truncation=True, max_length=engine.max_text_len, verbose=False
    )
    offsets = [tuple(pair) for pair in encoded["offset_mapping"][0]]
    words = content_words(text_states.text, offsets)
    cells = maps.text_cross[0].shape[-1] - 1
    side = int(round(cells**0.5))
    return explanations(text_to_image(maps, method), words, (side, cells // side), windows, method)


def explain_hits(engine, text_states, hits: list[Hit], states_by_key: dict, method: str = DEFAULT_METHOD) -> list[Hit]:
    """`hits` with their explanations (the states are the rerank's, by (path, video frame time or None))."""
    if not hits:
        return hits
    from dataclasses import replace

    states = torch.stack([states_by_key[(hit.path, hit.t)] for hit in hits])
    windows = [image_window(hit.path, engine.preprocessing, hit.t) for hit in hits]
    found = explain_pairs(engine, text_states, states, windows, method)
    return [replace(hit, explanation=explanation) for hit, explanation in zip(hits, found)]


class KeptStates:
    """The vision states of the best `size` candidates seen so far, in rank_hits' order (score, cosine, path, frame
    time), so the hits shown can be explained without a second vision-tower pass or keeping the whole shortlist.
    Candidates are keyed by (path, video frame time or None); with `one_per_path` (rank_hits' frames="best") only
    each path's best frame counts, as it does among the hits."""

    def __init__(self, size: int, one_per_path: bool = False):
        self.size, self.one_per_path = size, one_per_path
        self.best: list[tuple[tuple, tuple[str, float | None], torch.Tensor]] = []

    def offer(self, keys: Sequence[tuple[str, float | None]], scores, similarities, states: torch.Tensor) -> None:
        for n, (path, time) in enumerate(keys):
            order = (-float(scores[n]), -float(similarities[n]), path, time or 0.0)
            self.best.append((order, (path, time), states[n]))
        self.best.sort(key=lambda item: item[0])
        if self.one_per_path:
            seen: set[str] = set()
            self.best = [item for item in self.best if not (item[1][0] in seen or seen.add(item[1][0]))]
        del self.best[self.size :]

    def by_key(self) -> dict[tuple[str, float | None], torch.Tensor]:
        return {key: state for _, key, state in self.best}
