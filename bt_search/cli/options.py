"""`bt-search query`'s options, declared once. The typer command (app.py) takes its parameters from this
table, and the light attach parser (attach.py) reads the same spellings, so neither keeps a copy.

Standard library only: the attach path imports this without typer.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bt_search import config
from bt_search.search.hits import DEFAULT_FRAMES


@dataclass(frozen=True)
class QueryOption:
    name: str  # the parameter's name in cli.app.query and in the dict attach.parse_args returns
    flags: tuple[str, ...]
    kind: Any  # str, int, float, Path, bool, or list (repeatable str)
    default: Any
    help: str
    min: int | None = None
    envvar: str | None = None
    light: bool = True  # the attach fast path reads it; else it leaves the whole command to typer
    served: bool = True  # a running server can answer a query that sets it

    @property
    def annotation(self) -> Any:
        if self.kind is list:
            return list[str]
        if self.kind is bool:
            return bool
        return self.kind if self.default is not None else self.kind | None


TEXTS_HELP = "Query texts (each one is a query)."
FORMAT_HELP = "table, jsonl, csv, tsv, paths (default: table on a TTY, else jsonl)."
NULL_HELP = "With --format paths: end each path with NUL (for xargs -0)."
INDEX_HELP = f"Index directory (env {config.ENV_INDEX}; default under XDG data dir)."
DEVICE_HELP = f"auto, cpu, cuda or mps (env {config.ENV_DEVICE})."
PRECISION_HELP = (
    "auto (CUDA: bf16; CPU: fp32 embeddings, rerank in bf16 where the CPU has AVX512-BF16, AMX or ARM BF16, "
    "else in int8), fp32 (the reference's numbers), bf16, fp16, int8 (CPU: fp32 embeddings, int8 rerank)."
)
BATCH_HELP = f"Images per model batch (env {config.ENV_BATCH_SIZE})."
QUIET_HELP = "No progress or summary on stderr."

QUERY_OPTIONS = (
    QueryOption("queries_file", ("--queries-file",), str, None, "Read queries from FILE, one per line; - for stdin."),
    QueryOption("image", ("--image",), Path, None, "Find images similar to this image (cosine, no rerank)."),
    QueryOption("index", ("--index",), Path, None, INDEX_HELP),
    QueryOption("model", ("--model",), str, None, "Default: the model recorded in the index."),
    QueryOption("top_k", ("--top-k", "-k"), int, config.DEFAULT_TOP_K, "Results per query.", min=1),
    QueryOption(
        "shortlist",
        ("--shortlist", "-n"),
        int,
        None,
        "Cosine candidates reranked by ITM (default: 50 on CUDA, 20 elsewhere).",
        min=1,
    ),
    QueryOption("no_rerank", ("--no-rerank",), bool, False, "Rank by cosine alone (no vision tower, no fusion)."),
    QueryOption(
        "rerank_budget",
        ("--rerank-budget",),
        float,
        None,
        "Rerank only the best candidates that fit in SECONDS; leave the rest out.",
    ),
    QueryOption(
        "threshold", ("--threshold",), float, None, "Drop results scoring below T (the --score they are ranked by)."
    ),
    QueryOption("under", ("--under",), Path, None, "Only images inside this folder."),
    QueryOption(
        "after",
        ("--after",),
        str,
        None,
        "Only images taken on this day (YYYY-MM-DD) or later: EXIF capture date, else file mtime.",
    ),
    QueryOption(
        "before",
        ("--before",),
        str,
        None,
        "Only images taken on this day (YYYY-MM-DD) or earlier (same rule as --after).",
    ),
    QueryOption(
        "sort",
        ("--sort",),
        str,
        "relevance",
        "Order of the top K: relevance, or date (oldest first; ranks stay relevance ranks).",
    ),
    QueryOption(
        "nots",
        ("--not",),
        list,
        [],
        "Steer away from this text (repeatable; TEXT::WEIGHT sets a weight).",
    ),
    QueryOption(
        "likes",
        ("--like",),
        list,
        [],
        "Steer toward this image (repeatable; shapes the shortlist).",
    ),
    QueryOption(
        "unlikes",
        ("--unlike",),
        list,
        [],
        "Steer away from this image (repeatable; shapes the shortlist).",
    ),
    QueryOption(
        "score",
        ("--score",),
        str,
        config.DEFAULT_SCORE,
        "Rank reranked results by blend (ITM probability + cosine), itm or cosine.",
    ),
    QueryOption(
        "frames",
        ("--frames",),
        str,
        DEFAULT_FRAMES,
        "Videos: best (each video's best frame) or all (every matching frame, each with its time t).",
    ),
    QueryOption(
        "no_fold",
        ("--no-fold",),
        bool,
        False,
        "Show near-duplicates (re-encoded, resized or slightly cropped copies) each on its own; by default they "
        "fold into the best of them, with +N similar.",
    ),
    QueryOption(
        "min_match",
        ("--min-match",),
        float,
        None,
        "Keep only results whose ITM match probability is at least P (0-1; needs the rerank). Exit 6 when none "
        "is left.",
    ),
    QueryOption("fmt", ("--format", "-f"), str, None, FORMAT_HELP),
    QueryOption("null", ("--null", "-0"), bool, False, NULL_HELP),
    QueryOption(
        "html",
        ("--html",),
        Path,
        None,
        "Also write an HTML contact sheet of the results to this file.",
        light=False,  # the contact sheet needs Pillow and the full CLI
    ),
    QueryOption(
        "explain",
        ("--explain",),
        bool,
        False,
        "Show where each hit matched the query and each of its words (heatmaps from the fusion layers; needs the "
        "rerank): in jsonl, and on --html's contact sheet.",
    ),
    QueryOption(
        "explain_dir",
        ("--explain-dir",),
        Path,
        None,
        "Also write the heatmaps over each hit as PNGs into DIR, one per hit and word (implies --explain).",
        light=False,  # the overlays need Pillow and the full CLI
    ),
    QueryOption("device", ("--device",), str, None, DEVICE_HELP),
    QueryOption("precision", ("--precision",), str, "auto", PRECISION_HELP),
    QueryOption("batch_size", ("--batch-size",), int, None, BATCH_HELP, min=1),
    QueryOption(
        "no_server",
        ("--no-server",),
        bool,
        False,
        "Search in-process even when a `bt-search serve` for this index is running.",
        envvar="BT_SEARCH_NO_SERVER",
        light=False,
        served=False,
    ),
    QueryOption("quiet", ("--quiet", "-q"), bool, False, QUIET_HELP),
    QueryOption(
        "verbose",
        ("--verbose", "-v"),
        bool,
        False,
        "Say on stderr which path answered: a running server (its URL), or this process and why.",
    ),
)
QUERY_DEFAULTS: dict[str, Any] = {"texts": [], **{option.name: option.default for option in QUERY_OPTIONS}}


def asks_only_what_a_server_answers(options: dict[str, Any]) -> bool:
    """Whether a server may answer this query: every option a server does not answer (--no-server) left at
    its default. The CLI and the attach path both ask this."""
    return all(options[option.name] == option.default for option in QUERY_OPTIONS if not option.served)


def typer_signature(typer: Any) -> inspect.Signature:
    """The signature cli.app.query declares to typer: TEXTS, then every option of the table."""
    texts = inspect.Parameter(
        "texts",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=typer.Argument(None, help=TEXTS_HELP),
        annotation=list[str],
    )
    options = [
        inspect.Parameter(
            option.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(option.default, *option.flags, help=option.help, min=option.min, envvar=option.envvar),
            annotation=option.annotation,
        )
        for option in QUERY_OPTIONS
    ]
    return inspect.Signature([texts, *options], return_annotation=None)
