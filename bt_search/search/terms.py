"""Query terms: a positive text plus optional negative texts and example images, each with a weight. Pure.

Syntax (CLI options and `--queries-file` lines alike):

    TEXT [--not TEXT]... [--like IMAGE]... [--unlike IMAGE]...

Any term may end in `::WEIGHT`, a number > 0 and at most 100 (default 1): `"a beach::2" --not "people::0.5"`.
The option names set the sign; the weight only scales.

- `--no-rerank` (and `--score cosine`): the query vector is
  `normalize(Σ w·t(TEXT) + Σ w·i(like) − Σ w·t(not) − Σ w·i(unlike))` over unit ITC embeddings, and results
  are ranked by cosine to it. A plain TEXT gives exactly its own text embedding.
- Rerank: the shortlist vector leaves the `--not` texts out (see `Terms.shortlist_terms`); ITM scores text
  against images, so the positive TEXT and the `--not` texts take part there, the images only through the
  shortlist. A candidate's ITM score is `ITM(TEXT) · Π (1 − ITM(not))^w`: the probability that it matches
  the text and none of the negatives, treating them as independent, in [0, 1] (`--score blend` then adds
  the cosine); each `--not` text costs one more fusion pass per candidate.

Parsing only (no numpy: `query` through a server imports this); the arithmetic is in term_vectors.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from bt_search.errors import UsageError

WEIGHT_SEPARATOR = "::"
# A weight scales a term against the others; past this, (1 - ITM)^w and sums of weighted unit vectors lose
# every other term to rounding (a --not weighted 1e200 made every score 0.0).
MAX_WEIGHT = 100.0
LINE_OPTION = re.compile(r"(?:^|\s+)--(not|like|unlike)(?:\s+|$)")


@dataclass(frozen=True)
class Weighted:
    value: str  # a text, or an image path
    weight: float = 1.0


@dataclass(frozen=True)
class Terms:
    """One query: its positive text and the terms that shape it."""

    text: Weighted
    nots: tuple[Weighted, ...] = ()
    likes: tuple[Weighted, ...] = ()
    unlikes: tuple[Weighted, ...] = ()

    @property
    def is_plain(self) -> bool:
        return not (self.nots or self.likes or self.unlikes)

    @property
    def label(self) -> str:
        """How the query is shown in results: the TEXT, then its terms in the line syntax."""
        options = [("not", self.nots), ("like", self.likes), ("unlike", self.unlikes)]
        return " ".join([_show(self.text)] + [f"--{name} {_show(t)}" for name, terms in options for t in terms])

    def line(self, image_path: Callable[[str], str] = str) -> str:
        """These terms as one query line that parses back to them exactly (weights in full precision), with
        each example image's path passed through `image_path`: how a query travels to a server."""
        options = [("not", self.nots, str), ("like", self.likes, image_path), ("unlike", self.unlikes, image_path)]
        return " ".join(
            [_exact(self.text, str)] + [f"--{name} {_exact(t, path)}" for name, terms, path in options for t in terms]
        )

    def shortlist_terms(self, reranked: bool) -> Terms:
        """The terms the shortlist vector is made of. Reranked, the `--not` texts act through ITM alone: taken
        off the vector as well, they cost the target more than they remove (bench_terms.py: R@1 0.637 with the
        positive shortlist against 0.338 with the difference, docs/performance.md "Negatives")."""
        return Terms(self.text, (), self.likes, self.unlikes) if reranked else self

    def with_terms(self, nots=(), likes=(), unlikes=()) -> Terms:
        """These terms plus shared ones (the CLI's options apply to every query of the call)."""
        return Terms(self.text, self.nots + tuple(nots), self.likes + tuple(likes), self.unlikes + tuple(unlikes))


def parse_weighted(spec: str) -> Weighted:
    """`VALUE` or `VALUE::WEIGHT` -> Weighted. A tail after `::` that is not a number stays part of the value."""
    value, separator, tail = spec.rpartition(WEIGHT_SEPARATOR)
    if not separator:
        return Weighted(spec.strip())
    try:
        weight = float(tail)
    except ValueError:
        return Weighted(spec.strip())
    if not math.isfinite(weight) or not 0 < weight <= MAX_WEIGHT:
        raise UsageError(f"term weight must be a number > 0 and at most {MAX_WEIGHT:g}, not {tail!r} in {spec!r}")
    if not value.strip():
        raise UsageError(f"empty term before {WEIGHT_SEPARATOR}{tail}")
    return Weighted(value.strip(), weight)


def parse_query(text: str, nots=(), likes=(), unlikes=()) -> Terms:
    """A positional TEXT with the option values given beside it."""
    return Terms(
        parse_weighted(text),
        tuple(_term("nots", t) for t in nots),
        tuple(_term("likes", t) for t in likes),
        tuple(_term("unlikes", t) for t in unlikes),
    )


def _term(parameter: str, spec: str) -> Weighted:
    if not spec.strip():
        raise UsageError(f"`{parameter}` holds an empty term: give a text (or an image for likes and unlikes)")
    return parse_weighted(spec)


def parse_line(line: str) -> Terms:
    """One `--queries-file` line: `TEXT [--not TEXT]... [--like IMAGE]... [--unlike IMAGE]...`.

    Split on the option words alone (no shell quoting), so apostrophes and quotes in a caption stay as typed.
    """
    pieces = LINE_OPTION.split(line.strip())
    text, rest = pieces[0], pieces[1:]
    if not text.strip():
        raise UsageError(f"query line {line.strip()!r} has no TEXT before its options")
    grouped: dict[str, list[str]] = {"not": [], "like": [], "unlike": []}
    for name, value in zip(rest[::2], rest[1::2]):
        if not value.strip():
            raise UsageError(f"--{name} needs a value in query line {line.strip()!r}")
        grouped[name].append(value)
    return parse_query(text, grouped["not"], grouped["like"], grouped["unlike"])


def _show(term: Weighted) -> str:
    return term.value if term.weight == 1.0 else f"{term.value}{WEIGHT_SEPARATOR}{term.weight:g}"


def _exact(term: Weighted, value: Callable[[str], str]) -> str:
    return value(term.value) + ("" if term.weight == 1.0 else f"{WEIGHT_SEPARATOR}{term.weight!r}")
