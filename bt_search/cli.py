"""The `bt-search` command line: parse options, call the library, print. stdout is data, stderr is talk.

Exit codes: 0 ok; 1 failure (bad index, model, I/O); 2 usage error; 3 `index --strict` skipped files;
130 interrupted (committed work is kept; re-run to resume).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import config
from .errors import EXIT_FAILURE, EXIT_SKIPPED, BtSearchError, IndexMissingError, UsageError, describe_os_error

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
PrecisionOpt = typer.Option(
    "auto",
    "--precision",
    help="auto (CUDA: bf16; CPU: fp32 embeddings, rerank in bf16 where the CPU has AVX512-BF16 or AMX, else fp32), "
    "fp32 (the reference's numbers), bf16, fp16.",
)
BatchOpt = typer.Option(None, "--batch-size", min=1, help=f"Images per model batch (env {config.ENV_BATCH_SIZE}).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr.")


@contextmanager
def cli_errors(quiet: bool = False) -> Iterator[None]:
    """Typed library errors -> one line on stderr and the documented exit code; each distinct Python
    warning -> one line, none with --quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if quiet else "always")
        warnings.showwarning = _once_per_message(lambda message: err_console.print(f"[yellow]warning:[/] {message}"))
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
            if isinstance(err, OSError) and (message := describe_os_error(err)):
                err_console.print(f"[red]error:[/] {message}")  # disk full, read-only: the user can act
                raise typer.Exit(EXIT_FAILURE) from None
            if os.environ.get(config.ENV_DEBUG):
                raise
            err_console.print(
                f"[red]internal error:[/] {type(err).__name__}: {err}. "
                f"Set {config.ENV_DEBUG}=1 for the traceback, and please report it."
            )
            raise typer.Exit(1) from None


def _once_per_message(show):
    """A warnings.showwarning that shows each distinct message once (the "once" filter forgets what it
    showed whenever a nested catch_warnings exits, as image decoding does)."""
    shown: set[str] = set()

    def showwarning(message, *args, **kwargs) -> None:
        if str(message) not in shown:
            shown.add(str(message))
            show(message)

    return showwarning


_index_dir = config.index_dir  # shared with the attach fast path (serve/attach.py)


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
    paths: list[str] = typer.Argument(
        None, help="Folders (searched recursively), image files, or URLs (s3://, gs://, file://; --executor ray)."
    ),
    index: Path | None = IndexOpt,
    model: str | None = typer.Option(
        None, "--model", help=f"Hub id or local checkpoint dir (env {config.ENV_MODEL})."
    ),
    device: str | None = DeviceOpt,
    precision: str = PrecisionOpt,
    batch_size: int | None = BatchOpt,
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=0,
        help=f"Decoding processes; 0 decodes inline (default: 0 on CPU, else cores - 1 up to 4; env {config.ENV_WORKERS}).",
    ),
    prune: bool = typer.Option(
        False, "--prune", help="Drop indexed images under PATHS whose files are gone (default: keep them)."
    ),
    include_hidden: bool | None = typer.Option(
        None,
        "--include-hidden/--skip-hidden",
        help="Also index hidden files/folders, ._* and @eaDir (default: skip; recorded for re-runs).",
    ),
    exclude: list[str] | None = typer.Option(
        None,
        "--exclude",
        help="Leave out paths matching this shell glob on the absolute path, e.g. '*/node_modules/*' (repeatable; replaces the recorded list).",
    ),
    prune_excluded: bool = typer.Option(
        False,
        "--prune-excluded",
        help="With --prune, also drop indexed files that the hidden/--exclude rules now leave out.",
    ),
    strict: bool = typer.Option(False, "--strict", help=f"Exit {EXIT_SKIPPED} if any file was skipped."),
    draft: bool = typer.Option(
        True, "--draft/--no-draft", help="Decode big JPEGs at reduced DCT scale (faster, cosine >= 0.99)."
    ),
    index_type: str | None = typer.Option(
        None,
        "--index-type",
        help="FAISS index: auto (flat up to 100k images, then ivf_flat, ivf_sq8, ivf_pq as --memory-budget requires), flat, hnsw, ivf_flat, ivf_sq8, ivf_pq (default: the index's recorded choice, else auto).",
    ),
    memory_budget: str | None = typer.Option(
        None,
        "--memory-budget",
        help="Memory the FAISS index may take, e.g. 512MB, 4GiB; picks the index type for auto (default: the recorded budget, else env BT_SEARCH_MEMORY_BUDGET, else 1GiB).",
    ),
    commit_every: int = typer.Option(
        256, "--commit-every", min=1, help="Images per crash-safe commit (also every 30 s)."
    ),
    executor: str = typer.Option(
        "local", "--executor", help="local (this process) or ray (Ray Data; docs/distributed.md)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster for --executor ray (default: RAY_ADDRESS, else a local Ray)."
    ),
    from_list: Path | None = typer.Option(
        None, "--from-list", help="Also index the paths/URLs listed in FILE (text, or Parquet/CSV with a path column)."
    ),
    quiet: bool = QuietOpt,
) -> None:
    """Embed images under PATHS into the index (incremental: unchanged files are not decoded again)."""
    from .distributed.model_facts import driver_model
    from .indexer import identity_for, index_paths
    from .scan_rules import resolved_rules
    from .store import IndexWriter

    with cli_errors(quiet):
        ann_choice = _ann_choice(index_type, memory_budget)
        sources = _index_sources(paths or [], from_list, executor)
        directory = _index_dir(index)
        model = model or _existing_model(directory) or config.default_model()
        _say(quiet, f"loading model {model} ...")
        on_ray = executor == "ray"  # the driver needs the identity only (no torch): actors load the model
        engine = (
            driver_model(model, precision)
            if on_ray
            else _load_engine(model, device or config.default_device(), precision)
        )
        progress = RichIndexProgress(quiet)
        with IndexWriter.open(directory, identity_for(engine)) as writer:
            writer.choose_ann(**ann_choice)
            try:
                rules = resolved_rules(writer.settings.get("scan_rules"), include_hidden, exclude or None)
                common = dict(
                    batch_size=batch_size or config.default_batch_size(),
                    draft=draft,
                    prune=prune,
                    commit_rows=commit_every,
                    progress=progress,
                    rules=rules,
                    prune_excluded=prune_excluded,
                )
                if on_ray:
                    from .distributed import index_with_ray

                    device = device or config.default_device()
                    report = index_with_ray(
                        sources, writer, engine, device=device, precision=precision, address=ray_address, **common
                    )
                else:
                    report = index_paths(sources, writer, engine, workers=workers, **common)
            finally:
                progress.stop()
        if not quiet:
            _print_index_summary(report, directory)
        if strict and (report.skipped or report.kept):
            raise typer.Exit(EXIT_SKIPPED)


def _ann_choice(index_type: str | None, memory_budget: str | None) -> dict:
    """--index-type and --memory-budget checked before any model loads (UsageError names the bad value)."""
    from .store.ann import parse_bytes
    from .store.ann_upkeep import normalise_choice

    return {
        "index_type": None if index_type is None else normalise_choice(index_type),
        "memory_budget": None if memory_budget is None else parse_bytes(memory_budget),
    }


def _load_engine(model: str, device: str, precision: str):
    from .loading import load_engine  # imports torch: only where the model runs in this process

    return load_engine(model, device=device, precision=precision)


def _index_sources(paths: list[str], from_list: Path | None, executor: str) -> list[str]:
    """PATHS plus the --from-list entries; every local one must exist, URLs need the Ray executor."""
    from .distributed.sources import is_url, read_source_list

    if executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, not {executor!r}")
    sources = list(paths) + (read_source_list(from_list) if from_list else [])
    if not sources:
        raise UsageError("nothing to index: give PATHS or --from-list FILE")
    for source in sources:
        if is_url(source) and executor != "ray":
            raise UsageError(f"{source} is a URL: URLs are read by --executor ray")
        if not is_url(source) and not os.path.lexists(source):
            raise UsageError(f"no such file or directory: {source}")
    return sources


def _existing_model(directory: Path) -> str | None:
    """The model an existing index was built with, so re-runs need no --model. A damaged index is
    reported here, before any model loads (or downloads)."""
    from .store import IndexReader

    try:
        return IndexReader.open(directory).identity.model
    except IndexMissingError:
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
    if report.kept:
        err_console.print(f"  {len(report.kept)} indexed file(s) could not be read this run; their rows are kept")
    reasons = Counter(reason.split(" (")[0] for _, reason in report.skipped)
    for reason, count in reasons.most_common():
        err_console.print(f"  skipped {count:>5} x {reason}")


@app.command()
def query(
    texts: list[str] = typer.Argument(None, help="Query texts (each one is a query)."),
    queries_file: str | None = typer.Option(
        None, "--queries-file", help="Read queries from FILE, one per line; - for stdin."
    ),
    image: Path | None = typer.Option(
        None, "--image", help="Find images similar to this image (cosine, no rerank)."
    ),
    index: Path | None = IndexOpt,
    model: str | None = typer.Option(None, "--model", help="Default: the model recorded in the index."),
    top_k: int = typer.Option(config.DEFAULT_TOP_K, "--top-k", "-k", min=1, help="Results per query."),
    shortlist: int | None = typer.Option(
        None, "--shortlist", "-n", min=1, help="Cosine candidates reranked by ITM (default: 50 on CUDA, 20 elsewhere)."
    ),
    no_rerank: bool = typer.Option(False, "--no-rerank", help="Rank by cosine alone (no vision tower, no fusion)."),
    rerank_budget: float | None = typer.Option(
        None, "--rerank-budget", help="Rerank only the best candidates that fit in SECONDS; leave the rest out."
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Drop results scoring below T (the --score they are ranked by)."
    ),
    under: Path | None = typer.Option(None, "--under", help="Only images inside this folder."),
    after: str | None = typer.Option(
        None, "--after", help="Only images taken on this day (YYYY-MM-DD) or later: EXIF capture date, else file mtime."
    ),
    before: str | None = typer.Option(
        None, "--before", help="Only images taken on this day (YYYY-MM-DD) or earlier (same rule as --after)."
    ),
    sort: str = typer.Option(
        "relevance", "--sort", help="Order of the top K: relevance, or date (oldest first; ranks stay relevance ranks)."
    ),
    nots: list[str] = typer.Option(
        [], "--not", help="Steer away from this text (repeatable; TEXT::WEIGHT sets a weight)."
    ),
    likes: list[str] = typer.Option([], "--like", help="Steer toward this image (repeatable; shapes the shortlist)."),
    unlikes: list[str] = typer.Option(
        [], "--unlike", help="Steer away from this image (repeatable; shapes the shortlist)."
    ),
    score: str = typer.Option(
        config.DEFAULT_SCORE,
        "--score",
        help="Rank reranked results by blend (ITM probability + cosine), itm or cosine.",
    ),
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="table, jsonl, csv, tsv, paths (default: table on a TTY, else jsonl)."
    ),
    null: bool = typer.Option(
        False, "--null", "-0", help="With --format paths: end each path with NUL (for xargs -0)."
    ),
    html: Path | None = typer.Option(
        None, "--html", help="Also write an HTML contact sheet of the results to this file."
    ),
    device: str | None = DeviceOpt,
    precision: str = PrecisionOpt,
    batch_size: int | None = BatchOpt,
    no_server: bool = typer.Option(
        False,
        "--no-server",
        envvar="BT_SEARCH_NO_SERVER",
        help="Search in-process even when a `bt-search serve` for this index is running.",
    ),
    quiet: bool = QuietOpt,
) -> None:
    """Search the index by text: cosine shortlist, ITM rerank, top K on stdout."""
    from .output import check_format, default_format
    from .query_input import collect_queries
    from .scan import canonical_path

    with cli_errors(quiet):
        fmt = fmt or ("paths" if null else default_format(sys.stdout.isatty()))
        check_format(fmt, null)  # before the model loads
        queries = collect_queries(texts or [], queries_file, image)
        under = None if under is None else Path(canonical_path(under))  # the index stores canonical paths
        terms = _query_terms(queries, nots, likes, unlikes)
        # A warm server answers plain searches without loading torch here; terms, scores, budgets and date
        # filters are searched in-process.
        plain = (
            all(t.is_plain and t.label == q for t, q in zip(terms, queries))
            and score == config.DEFAULT_SCORE
            and rerank_budget is None
        )
        if not no_server and plain and after is None and before is None and sort == "relevance":
            from .serve.client import served_options

            options = served_options(
                top_k=top_k,
                shortlist=shortlist,
                rerank=not no_rerank,
                threshold=threshold,
                under=_opt_str(under),
                image=_opt_str(image),
            )
            served = _served_results(index, model, device, precision, queries, image, options, quiet)
            if served is not None:
                return _write_results(served, fmt, null, html, quiet)
        from .capture import check_sort, date_filter, dated_hits, parse_day
        from .rerank_budget import default_shortlist
        from .search import Searcher

        where = date_filter(parse_day(after, "--after"), parse_day(before, "--before"))
        check_sort(sort)
        uses_images = image is not None or any(t.likes or t.unlikes for t in terms)
        text_only = (no_rerank or score == "cosine") and not uses_images  # no vision tower, no fusion needed
        reader, engine = _open_index_and_model(index, model, device, precision, text_only=text_only)
        searcher = Searcher(
            reader,
            engine,
            batch_size=batch_size or config.default_batch_size(),
            on_missing=lambda path, reason: _say(quiet, f"[yellow]skipped[/] {path!r}: {reason}"),
            on_note=lambda message: _say(quiet, message),
            progress=_RerankBar() if not (quiet or no_rerank or image) and sys.stderr.isatty() else None,
        )
        if image is not None:
            results = [
                searcher.similar_images(
                    str(image), top_k=top_k, threshold=threshold, under=_opt_str(under), where=where
                )
            ]
        else:
            results = searcher.search(
                terms,
                top_k=top_k,
                shortlist=shortlist or default_shortlist(engine.device.type),
                rerank=not no_rerank,
                threshold=threshold,
                under=_opt_str(under),
                score=score,
                rerank_budget=rerank_budget,
                where=where,
            )
        results = [dated_hits(hits, sort) for hits in results]
        _write_results(results, fmt, null, html, quiet)


def _write_results(results, fmt: str, null: bool, html: Path | None, quiet: bool) -> None:
    from .output import write_query_output

    write_query_output(results, fmt, sys.stdout, null_separated=null)
    if html is not None:
        from .html_sheet import write_contact_sheet

        write_contact_sheet([hit for hits in results for hit in hits], html)
        _say(quiet, f"wrote {html}")


def _served_results(index, model, device, precision, queries, image, options, quiet):
    """Results from a running `bt-search serve` for this index and model, or None (search in-process)."""
    from .serve.client import served_results

    return served_results(
        str(_index_dir(index)),
        model=model,
        device=device or config.default_device(),
        precision=precision,
        queries=queries,
        image=_opt_str(image),
        options=options,
        on_missing=lambda path, reason: _say(quiet, f"[yellow]skipped[/] {path!r}: {reason}"),
        notice=lambda message: _say(quiet, f"[yellow]note:[/] {message}"),
    )


class _RerankBar:
    """The rerank's progress (vision states + ITM pairs) on stderr, shown only once it has taken a second."""

    def __init__(self, delay_s: float = 1.0):
        self.delay_s, self.timer, self.done, self.total = delay_s, None, 0, 0
        self.bar = Progress(
            TextColumn("[bold]reranking[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        self.task = self.bar.add_task("rerank", total=None)

    def __call__(self, done: int, total: int) -> None:
        import threading

        self.done, self.total = done, total
        self.bar.update(self.task, completed=done, total=total)
        if self.timer is None:
            self.timer = threading.Timer(self.delay_s, self._show)
            self.timer.daemon = True
            self.timer.start()
        if done >= total:
            self.timer.cancel()
            self.bar.stop()

    def _show(self) -> None:
        if self.done < self.total:
            self.bar.start()


def _query_terms(queries: list[str], nots: list[str], likes: list[str], unlikes: list[str]):
    """Each query (TEXT or file line, same syntax: terms.py) plus the --not/--like/--unlike given to the call."""
    from .terms import parse_line, parse_query  # pure Python: the server path stays light

    shared = parse_query("-", nots, likes, unlikes)
    return [parse_line(q).with_terms(shared.nots, shared.likes, shared.unlikes) for q in queries]


def _opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _open_index_and_model(
    index: Path | None, model: str | None, device: str | None, precision: str, text_only: bool = False
):
    from .loading import load_engine
    from .store import IndexReader

    reader = IndexReader.open(_index_dir(index))
    if len(reader) == 0:
        from .errors import IndexMissingError

        raise IndexMissingError(
            f"the index at {reader.directory} holds no images yet; run `bt-search index PATH` first"
        )
    engine = load_engine(
        model or reader.identity.model,
        device=device or config.default_device(),
        precision=precision,
        text_only=text_only,
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


@app.command()
def info(
    index: Path | None = IndexOpt,
    fmt: str = typer.Option("text", "--format", "-f", help="text or json."),
) -> None:
    """What an index holds: model, embedding size, counts, index type, recall, size on disk, last update."""
    from .inspect import index_info, render_info

    with cli_errors():
        render_info(index_info(_index_dir(index)), fmt, sys.stdout)


@app.command()
def failed(
    index: Path | None = IndexOpt,
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="table, jsonl, csv, tsv, paths (default: table on a TTY, else jsonl)."
    ),
    null: bool = typer.Option(
        False, "--null", "-0", help="With --format paths: end each path with NUL (for xargs -0)."
    ),
) -> None:
    """Files that could not be indexed, with their reasons."""
    from .inspect import failed_records, render_failed
    from .output import default_format

    with cli_errors():
        fmt = fmt or ("paths" if null else default_format(sys.stdout.isatty()))
        sys.stdout.reconfigure(errors="surrogateescape")
        render_failed(failed_records(_index_dir(index)), fmt, sys.stdout, null_separated=null)


@app.command()
def serve(
    index: Path | None = IndexOpt,
    model: str | None = typer.Option(None, "--model", help="Default: the model recorded in the index."),
    device: str | None = DeviceOpt,
    precision: str = PrecisionOpt,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; anything but loopback needs --allow-remote and --token."
    ),
    port: int = typer.Option(
        8765, "--port", min=0, max=65535, help="Port (0: any free one; the discovery file says which)."
    ),
    idle_timeout: str | None = typer.Option(
        None, "--idle-timeout", help="Exit after this long without a request: 90s, 15m, 2h (default: never)."
    ),
    state_cache_mb: int = typer.Option(
        1024, "--state-cache-mb", min=0, help="Memory for candidates' vision states kept between queries."
    ),
    max_queue: int = typer.Option(
        config.DEFAULT_MAX_QUEUE, "--max-queue", min=1, help="Searches that may wait for the model; more get 429."
    ),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a --host other machines can reach."),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="BT_SEARCH_SERVE_TOKEN",
        help="Require this token (Authorization: Bearer, or /?token= once in a browser).",
    ),
    batch_size: int | None = BatchOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Keep the model and index loaded and answer searches: a JSON API, a search page, and `query` auto-attach."""
    # Before torch loads: idle OpenMP threads sleep instead of spinning, so a short query's text tower does not
    # fight its own team for busy cores (10x on 2 cores under load; same numerics; docs/performance.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .serve.runner import ServeSettings, parse_duration, serve_forever

    with cli_errors():
        settings = ServeSettings(
            index_dir=_index_dir(index),
            model=model,
            device=device or config.default_device(),
            precision=precision,
            host=host,
            port=port,
            idle_timeout=parse_duration(idle_timeout),
            state_cache_mb=state_cache_mb,
            allow_remote=allow_remote,
            token=token,
            max_queue=max_queue,
            batch_size=batch_size or config.default_batch_size(),
        )
        serve_forever(settings, say=lambda message: _say(quiet, message))


@app.command("eval")
def eval_command(
    captions: Path = typer.Argument(..., help="Captions: CSV/TSV/JSONL with file,caption, or Karpathy-split JSON."),
    index: Path | None = IndexOpt,
    images_root: Path | None = typer.Option(
        None, "--images-root", help="Folder relative file names start from (default: the captions file's folder)."
    ),
    shortlist: int = typer.Option(20, "--shortlist", "-n", min=1, help="Cosine candidates reranked by ITM (N)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    device: str | None = DeviceOpt,
    precision: str = PrecisionOpt,
    batch_size: int | None = BatchOpt,
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
        ("+ ITM + cosine (blend)", report.blended_recall, report.reranked_seconds_per_query),
    ]
    for name, recall, seconds in rows:
        table.add_row(name, *(f"{recall[k]:.3f}" for k in ks), f"{seconds * 1000:.1f}")
    Console().print(table)


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
