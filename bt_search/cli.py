"""The `bt-search` command line: parse options, call the library, print. stdout is data, stderr is talk.

Exit codes: 0 ok; 1 failure (bad index, model, I/O); 2 usage error; 3 `index --strict` skipped files;
130 interrupted (committed work is kept; re-run to resume).
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import config
from .errors import EXIT_SKIPPED, BtSearchError, UsageError

app = typer.Typer(
    help="Search your images by text with BridgeTower: `index` folders, then `query` them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
EXIT_INTERRUPTED = 130

IndexOpt = typer.Option(None, "--index", help=f"Index directory (env {config.ENV_INDEX}; default under XDG data dir).")
DeviceOpt = typer.Option(None, "--device", help=f"auto, cpu, cuda or mps (env {config.ENV_DEVICE}).")
PrecisionOpt = typer.Option("auto", "--precision", help="auto (fp32 on CPU, bf16 on CUDA), fp32, bf16 (also fast on CPUs with AMX), fp16.")
BatchOpt = typer.Option(None, "--batch-size", min=1, help=f"Images per model batch (env {config.ENV_BATCH_SIZE}).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr.")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Typed library errors -> one line on stderr and the documented exit code; Python warnings -> one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *args, **kwargs: err_console.print(f"[yellow]warning:[/] {message}")
        try:
            yield
        except BtSearchError as err:
            err_console.print(f"[red]error:[/] {err}")
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished batches are kept; run the same command to resume")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # The reader of stdout went away (`| head`): stop quietly, as shell tools do.
            sys.stderr.close()
            raise typer.Exit(0) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - the one place that turns surprises into a message
            if os.environ.get(config.ENV_DEBUG):
                raise
            err_console.print(
                f"[red]internal error:[/] {type(err).__name__}: {err}. "
                f"Set {config.ENV_DEBUG}=1 for the traceback, and please report it."
            )
            raise typer.Exit(1) from None


def _index_dir(index: Optional[Path]) -> Path:
    return (index or config.default_index_dir()).expanduser()


class RichIndexProgress:
    """Draws the indexing bar on stderr; skip lines go above it."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = Progress(
            TextColumn("[bold]indexing[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err_console,
            disable=quiet,
            transient=False,
        )
        self.task = None

    def started(self, to_embed: int, unchanged: int) -> None:
        if not self.quiet and unchanged:
            err_console.print(f"{unchanged} unchanged file(s) skipped without decoding")
        self.bar.start()
        self.task = self.bar.add_task("index", total=to_embed, rate="")

    def advanced(self, count: int) -> None:
        self.bar.advance(self.task, count)
        speed = self.bar.tasks[0].speed
        if speed:
            self.bar.update(self.task, rate=f"{speed:6.1f} img/s")

    def skipped(self, path: str, reason: str) -> None:
        if not self.quiet:
            err_console.print(f"[yellow]skipped[/] {path!r}: {reason}")

    def stop(self) -> None:
        self.bar.stop()


@app.command()
def index(
    paths: List[Path] = typer.Argument(..., help="Folders (searched recursively) or image files."),
    index: Optional[Path] = IndexOpt,
    model: Optional[str] = typer.Option(None, "--model", help=f"Hub id or local checkpoint dir (env {config.ENV_MODEL})."),
    device: Optional[str] = DeviceOpt,
    precision: str = PrecisionOpt,
    batch_size: Optional[int] = BatchOpt,
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help=f"Decoding processes; 0 decodes inline (default: 0 on CPU, else cores - 1 up to 4; env {config.ENV_WORKERS})."),
    prune: bool = typer.Option(False, "--prune", help="Drop indexed images under PATHS whose files are gone (default: keep them)."),
    strict: bool = typer.Option(False, "--strict", help=f"Exit {EXIT_SKIPPED} if any file was skipped."),
    draft: bool = typer.Option(True, "--draft/--no-draft", help="Decode big JPEGs at reduced DCT scale (faster, cosine >= 0.99)."),
    index_type: Optional[str] = typer.Option(None, "--index-type", help="FAISS index: auto (flat up to 100k images), flat, hnsw, ivf (default: the index's recorded choice, else auto)."),
    commit_every: int = typer.Option(256, "--commit-every", min=1, help="Images per crash-safe commit (also every 30 s)."),
    quiet: bool = QuietOpt,
) -> None:
    """Embed images under PATHS into the index (incremental: unchanged files are not decoded again)."""
    from .indexer import identity_for, index_paths
    from .loading import load_engine
    from .store import IndexWriter

    with cli_errors():
        if index_type is not None and index_type not in ("auto", "flat", "hnsw", "ivf"):
            raise UsageError(f"--index-type must be auto, flat, hnsw or ivf, not {index_type!r}")
        for path in paths:
            if not path.exists() and not path.is_symlink():
                raise UsageError(f"no such file or directory: {path}")
        directory = _index_dir(index)
        model = model or _existing_model(directory) or config.default_model()
        _say(quiet, f"loading model {model} ...")
        engine = load_engine(model, device=device or config.default_device(), precision=precision)
        progress = RichIndexProgress(quiet)
        with IndexWriter.open(directory, identity_for(engine)) as writer:
            try:
                report = index_paths(
                    [str(p) for p in paths],
                    writer,
                    engine,
                    batch_size=batch_size or config.default_batch_size(),
                    workers=workers,
                    draft=draft,
                    prune=prune,
                    index_type=index_type,
                    commit_rows=commit_every,
                    progress=progress,
                )
            finally:
                progress.stop()
        if not quiet:
            _print_index_summary(report, directory)
        if strict and report.skipped:
            raise typer.Exit(EXIT_SKIPPED)


def _existing_model(directory: Path) -> Optional[str]:
    """The model an existing index was built with, so re-runs need no --model."""
    from .store import IndexReader

    try:
        return IndexReader.open(directory).identity.model
    except BtSearchError:
        return None


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        err_console.print(message)


def _print_index_summary(report, directory: Path) -> None:
    from collections import Counter

    err_console.print(
        f"[bold]done[/] in {report.seconds:.1f}s: {report.indexed} indexed, {report.unchanged} unchanged, "
        f"{len(report.skipped)} skipped, {report.removed} removed; {report.total_images} images in {directory}"
    )
    if report.failed_before:
        err_console.print(f"  {report.failed_before} file(s) that failed before are unchanged and were not retried")
    reasons = Counter(reason.split(" (")[0] for _, reason in report.skipped)
    for reason, count in reasons.most_common():
        err_console.print(f"  skipped {count:>5} x {reason}")


@app.command()
def query(
    texts: List[str] = typer.Argument(None, help="Query texts (each one is a query)."),
    queries_file: Optional[str] = typer.Option(None, "--queries-file", help="Read queries from FILE, one per line; - for stdin."),
    image: Optional[Path] = typer.Option(None, "--image", help="Find images similar to this image (cosine, no rerank)."),
    index: Optional[Path] = IndexOpt,
    model: Optional[str] = typer.Option(None, "--model", help="Default: the model recorded in the index."),
    top_k: int = typer.Option(config.DEFAULT_TOP_K, "--top-k", "-k", min=1, help="Results per query."),
    shortlist: int = typer.Option(config.DEFAULT_SHORTLIST, "--shortlist", "-n", min=1, help="Cosine candidates reranked by ITM."),
    no_rerank: bool = typer.Option(False, "--no-rerank", help="Rank by cosine alone (no vision tower, no fusion)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Drop results scoring below T."),
    under: Optional[Path] = typer.Option(None, "--under", help="Only images inside this folder."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="table, jsonl, csv, tsv, paths (default: table on a TTY, else jsonl)."),
    null: bool = typer.Option(False, "--null", "-0", help="With --format paths: end each path with NUL (for xargs -0)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML contact sheet of the results to this file."),
    device: Optional[str] = DeviceOpt,
    precision: str = PrecisionOpt,
    batch_size: Optional[int] = BatchOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Search the index by text: cosine shortlist, ITM rerank, top K on stdout."""
    from .output import default_format, render
    from .search import Searcher

    with cli_errors():
        fmt = fmt or ("paths" if null else default_format(sys.stdout.isatty()))
        queries = _collect_queries(texts or [], queries_file, image)
        text_only = no_rerank and image is None  # cosine search needs neither the vision tower nor fusion
        reader, engine = _open_index_and_model(index, model, device, precision, text_only=text_only)
        searcher = Searcher(
            reader,
            engine,
            batch_size=batch_size or config.default_batch_size(),
            on_missing=lambda path, reason: _say(quiet, f"[yellow]skipped[/] {path!r}: {reason}"),
        )
        if image is not None:
            results = [searcher.similar_images(str(image), top_k=top_k, under=_opt_str(under))]
        else:
            results = searcher.search(
                queries, top_k=top_k, shortlist=shortlist, rerank=not no_rerank, threshold=threshold, under=_opt_str(under)
            )
        sys.stdout.reconfigure(errors="surrogateescape")  # non-UTF-8 file names go out as their original bytes
        for position, hits in enumerate(results):
            render(hits, fmt, sys.stdout, null_separated=null, include_header=position == 0)
        sys.stdout.flush()
        if html is not None:
            from .html_sheet import write_contact_sheet

            write_contact_sheet([hit for hits in results for hit in hits], html)
            _say(quiet, f"wrote {html}")


def _opt_str(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(path)


def _collect_queries(texts: List[str], queries_file: Optional[str], image: Optional[Path]) -> List[str]:
    if image is not None:
        if texts or queries_file:
            raise UsageError("--image searches by an image; give no query text with it")
        return []
    queries = list(texts)
    if queries_file is not None:
        queries += _read_queries(queries_file)
    if not queries:
        raise UsageError("no query: give TEXT, --queries-file FILE (- for stdin) or --image PATH")
    if any(not q.strip() for q in queries):
        raise UsageError("empty query: give some text to search for")
    return queries


def _read_queries(source: str) -> List[str]:
    """One query per line; blank lines are ignored."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read --queries-file {source}: {err.strerror or err}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _open_index_and_model(
    index: Optional[Path], model: Optional[str], device: Optional[str], precision: str, text_only: bool = False
):
    from .loading import load_engine
    from .store import IndexReader

    reader = IndexReader.open(_index_dir(index))
    if len(reader) == 0:
        from .errors import IndexMissingError

        raise IndexMissingError(f"the index at {reader.directory} holds no images yet; run `bt-search index PATH` first")
    engine = load_engine(
        model or reader.identity.model, device=device or config.default_device(), precision=precision, text_only=text_only
    )
    _check_same_space(reader, engine)
    return reader, engine


def _check_same_space(reader, engine) -> None:
    from .errors import ModelMismatchError
    from .indexer import identity_for

    if not reader.identity.same_embedding_space(identity_for(engine)):
        raise ModelMismatchError(
            f"the index at {reader.directory} was built with {reader.identity.model} "
            f"(embedding size {reader.identity.embedding_dim}); {engine.model_id} embeds into another space. "
            "Drop --model to use the index's own model, or build another index with --index DIR"
        )


@app.command("eval")
def eval_command(
    captions: Path = typer.Argument(..., help="Captions: CSV/TSV/JSONL with file,caption, or Karpathy-split JSON."),
    index: Optional[Path] = IndexOpt,
    images_root: Optional[Path] = typer.Option(None, "--images-root", help="Folder relative file names start from (default: the captions file's folder)."),
    shortlist: int = typer.Option(20, "--shortlist", "-n", min=1, help="Cosine candidates reranked by ITM (N)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    device: Optional[str] = DeviceOpt,
    precision: str = PrecisionOpt,
    batch_size: Optional[int] = BatchOpt,
) -> None:
    """Text-to-image Recall@1/5/10 of the shortlist alone and with ITM rerank, and time per query."""
    import json

    from .evaluate import KS, evaluate, read_captions
    from .search import Searcher

    with cli_errors():
        if fmt not in ("table", "json"):
            raise UsageError(f"--format must be table or json, not {fmt!r}")
        pairs = read_captions(captions, images_root)
        reader, engine = _open_index_and_model(index, None, device, precision)
        searcher = Searcher(reader, engine, batch_size=batch_size or config.default_batch_size())
        report = evaluate(searcher, pairs, shortlist=shortlist)
        if report.skipped_captions:
            err_console.print(f"[yellow]warning:[/] {report.skipped_captions} caption(s) name images not in the index")
        if fmt == "json":
            sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
            return
        _print_eval_table(report, KS)


def _print_eval_table(report, ks) -> None:
    from rich.table import Table

    table = Table(title=f"text->image retrieval, {report.captions} captions, N={report.shortlist_size}")
    table.add_column("ranking")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    table.add_column("ms/query", justify="right")
    rows = [
        ("ITC shortlist", report.shortlist_recall, report.shortlist_seconds_per_query),
        ("+ ITM rerank", report.reranked_recall, report.reranked_seconds_per_query),
    ]
    for name, recall, seconds in rows:
        table.add_row(name, *(f"{recall[k]:.3f}" for k in ks), f"{seconds * 1000:.1f}")
    Console().print(table)


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
