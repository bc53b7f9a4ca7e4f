"""The `bt-search` command line: parse options, call the library, print. stdout is data, stderr is talk.

Exit codes: 0 ok; 1 failure (bad index, model, I/O); 2 usage error; 3 `index --strict` skipped files;
4 `query` found no hits because every candidate's file is gone; 5 `index` could not read a folder or file it
was given; 6 `query --min-match` left no hit; 130 interrupted (`index` keeps its committed work: re-run to resume).
"""

from __future__ import annotations

import os
import shlex
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import typer
import typer.main
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bt_search import config
from bt_search.cli.flags import flag_names, in_flags, with_picks
from bt_search.cli.live import live_view, stderr_console
from bt_search.cli.options import (
    BATCH_HELP,
    DEVICE_HELP,
    FORMAT_HELP,
    INDEX_HELP,
    NULL_HELP,
    PRECISION_HELP,
    QUIET_HELP,
    typer_signature,
)
from bt_search.errors import (
    EXIT_FAILURE,
    EXIT_NOTHING_LIVE,
    EXIT_SKIPPED,
    EXIT_UNREADABLE_ROOT,
    BtSearchError,
    IndexMissingError,
    UsageError,
    describe_os_error,
)

app = typer.Typer(
    help="Search your images by text with BridgeTower: `index` folders, then `query` them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # every command inherits -h
)
err_console = stderr_console()
EXIT_INTERRUPTED = 130

# The options every command shares, worded once (cli/options.py; `query` takes all of its options from there).
IndexOpt = typer.Option(None, "--index", help=INDEX_HELP)
DeviceOpt = typer.Option(None, "--device", help=DEVICE_HELP)
PrecisionOpt = typer.Option("auto", "--precision", help=PRECISION_HELP)
BatchOpt = typer.Option(None, "--batch-size", min=1, help=BATCH_HELP)
QuietOpt = typer.Option(False, "--quiet", "-q", help=QUIET_HELP)
FormatOpt = typer.Option(None, "--format", "-f", help=FORMAT_HELP)
NullOpt = typer.Option(False, "--null", "-0", help=NULL_HELP)
WatchOpt = typer.Option(
    False, "--watch", help="Then keep watching the folders: new and changed images are indexed, deleted ones pruned."
)
PollOpt = typer.Option(
    None,
    "--poll",
    min=0.1,
    metavar="SECONDS",
    help="With --watch: look for changes every SECONDS instead of waiting for file-system events (network "
    "shares; default: events, polling every 60 s where there are none).",
)


def _print_version(asked: bool) -> None:
    if asked:
        from bt_search import __version__

        typer.echo(f"bt-search {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", is_eager=True, expose_value=False, callback=_print_version, help="Print the version."
    ),
) -> None:
    pass


# The options that picked this command's index and model, as given (flag -> value): every command a message
# suggests repeats them (flags.with_picks), so the hint works on the index the user meant.
_PICKS: dict[str, str] = {}


def _picks(**given: Any) -> dict[str, str]:
    return {f"--{name}": str(value) for name, value in given.items() if value not in (None, "")}


@contextmanager
def cli_errors(quiet: bool = False, resumable: bool = False, picks: dict[str, str] | None = None) -> Iterator[None]:
    """Typed library errors -> one line on stderr and the documented exit code; each distinct Python
    warning -> one line, none with --quiet. Ctrl-C says what is kept: `resumable` (index) keeps its
    committed batches and resumes; the other commands write nothing to resume. `picks`: the options that
    picked the index and model, repeated in every command a message suggests."""
    previous = dict(_PICKS)
    _PICKS.clear()
    _PICKS.update(picks or {})
    try:
        with _reported(quiet, resumable):
            yield
    finally:
        _PICKS.clear()
        _PICKS.update(previous)


@contextmanager
def _reported(quiet: bool, resumable: bool) -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if quiet else "always")
        warnings.showwarning = _once_per_message(
            lambda message: err_console.print(f"[yellow]warning:[/] {escape(str(message))}")
        )
        try:
            yield
        except BtSearchError as err:
            err_console.print(f"[red]error:[/] {escape(_in_cli_words(str(err)))}")
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print(
                "[yellow]interrupted[/]: finished batches are kept; run the same command to resume"
                if resumable
                else "[yellow]interrupted[/]"
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # The reader of stdout went away (`| head`): stop quietly, as shell tools do.
            sys.stderr.close()
            raise typer.Exit(0) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - the one place that turns surprises into a message
            if isinstance(err, OSError) and (message := describe_os_error(err)):
                err_console.print(f"[red]error:[/] {escape(message)}")  # disk full, read-only: the user can act
                raise typer.Exit(EXIT_FAILURE) from None
            if os.environ.get(config.ENV_DEBUG):
                raise
            err_console.print(
                f"[red]internal error:[/] {type(err).__name__}: {escape(str(err))}. "
                f"Set {config.ENV_DEBUG}=1 for the traceback, and please report it."
            )
            raise typer.Exit(1) from None


def _in_cli_words(message: str) -> str:
    """A library message as the CLI prints it: parameters as flags, suggested commands with the user's picks."""
    return _hinted(in_flags(message, _flags()))


def _hinted(message: str) -> str:
    return with_picks(message, _PICKS, _accepts())


@cache
def _accepts() -> dict[str, set[str]]:
    """Each command's flags (what a suggested command may be completed with)."""
    commands = typer.main.get_command(app).commands
    return {name: {opt for param in command.params for opt in param.opts} for name, command in commands.items()}


@cache
def _flags() -> dict[str, str]:
    """What each parameter a library message names is called on this command line (cli/flags.py)."""
    commands = typer.main.get_command(app).commands.values()
    return flag_names((param.name, param.opts) for command in commands for param in command.params)


def _once_per_message(show):
    """A warnings.showwarning that shows each distinct message once (the "once" filter forgets what it
    showed whenever a nested catch_warnings exits, as image decoding does)."""
    shown: set[str] = set()

    def showwarning(message, *args, **kwargs) -> None:
        if str(message) not in shown:
            shown.add(str(message))
            show(message)

    return showwarning


_index_dir = config.index_dir  # shared with the attach fast path (cli/served.py)


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
        if not self.quiet and unchanged and to_embed:
            err_console.print(f"{unchanged} unchanged file(s) skipped without decoding")
        if to_embed:  # no bar for nothing to do: the summary says so
            self.bar.start()
            self.task = self.bar.add_task("index", total=to_embed, rate="")

    def advanced(self, count: int) -> None:
        if self.task is None:
            return
        self.bar.advance(self.task, count)
        speed = self.bar.tasks[0].speed
        if speed:
            self.bar.update(self.task, rate=f"{speed:6.1f} img/s")

    def skipped(self, path: str, reason: str) -> None:
        if not self.quiet:
            err_console.print(f"[yellow]skipped[/] {escape(repr(path))}: {escape(reason)}")

    def stop(self) -> None:
        if self.task is not None:
            self.bar.stop()


@app.command()
def index(
    paths: list[str] = typer.Argument(
        None, help="Folders (searched recursively), image files, or URLs (s3://, gs://, file://; --executor ray)."
    ),
    index: Path | None = IndexOpt,
    model: str | None = typer.Option(None, "--model", help=f"Hub id or local checkpoint dir (env {config.ENV_MODEL})."),
    device: str | None = DeviceOpt,
    precision: str = PrecisionOpt,
    batch_size: int | None = BatchOpt,
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=0,
        help="Decoding processes; 0 decodes inline "
        f"(default: 0 on CPU, else cores - 1 up to 4; env {config.ENV_WORKERS}).",
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
        help="Leave out paths matching this shell glob on the absolute path, e.g. '*/node_modules/*' "
        "(repeatable; replaces the recorded list).",
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
        help="FAISS index: auto (flat up to 100k images, then ivf_flat, ivf_sq8, ivf_pq as --memory-budget "
        "requires), flat, hnsw, ivf_flat, ivf_sq8, ivf_pq (default: the index's recorded choice, else auto).",
    ),
    memory_budget: str | None = typer.Option(
        None,
        "--memory-budget",
        help="Memory the FAISS index may take, e.g. 512MB, 4GiB; picks the index type for auto "
        "(default: the recorded budget, else env BT_SEARCH_MEMORY_BUDGET, else 1GiB).",
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
    watch: bool = WatchOpt,
    poll: float | None = PollOpt,
    video_frames_per_minute: float = typer.Option(
        config.DEFAULT_VIDEO_FRAMES_PER_MINUTE,
        "--video-frames-per-minute",
        help="Videos: at most this many frames a minute, kept at scene changes (the `video` extra).",
    ),
    video_max_frames: int = typer.Option(
        config.DEFAULT_VIDEO_MAX_FRAMES,
        "--video-max-frames",
        help="Videos: at most this many frames per video, spread over a long one.",
    ),
    quiet: bool = QuietOpt,
) -> None:
    """Embed images under PATHS into the index (incremental: unchanged files are not decoded again)."""
    from bt_search.engine.facts import driver_model
    from bt_search.indexing.run import check_model_for_index, index_paths
    from bt_search.media.scan_rules import resolved_rules
    from bt_search.media.video import VideoSampling
    from bt_search.store import IndexIdentity, IndexWriter

    with cli_errors(quiet, resumable=True, picks=_picks(index=index, model=model)):
        # Every check that needs no model comes first: a mistake fails in a moment, not after the model loads.
        video = VideoSampling(video_frames_per_minute, video_max_frames)
        ann_choice = _ann_choice(index_type, memory_budget)
        sources, list_entries = _index_sources(paths or [], from_list, executor)
        _check_watch(watch, poll, executor)
        directory = _index_dir(index)
        recorded = _existing_identity(directory)
        model = model or (recorded.model if recorded else None) or config.default_model()
        check_model_for_index(model, recorded, directory)
        on_ray = executor == "ray"  # the driver needs the identity only (no torch): actors load the model
        if on_ray:
            _say(quiet, f"loading model {model} ...")
            engine = driver_model(model, precision)
            identity = IndexIdentity.of(engine)
        else:  # loaded once a file is to be embedded (index_paths); a new index needs it for its manifest
            engine = _EngineLoader(model, device or config.default_device(), precision, quiet)
            identity = recorded or (lambda: IndexIdentity.of(engine()))
        progress = RichIndexProgress(quiet)
        watcher = (
            _watcher(directory, sources, engine, quiet, poll, batch_size, workers, draft, commit_every, video)
            if watch
            else None
        )
        with IndexWriter.open(directory, identity) as writer:
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
                    list_entries=list_entries,
                    video=video,
                )
                if on_ray:
                    from bt_search.distributed import index_with_ray

                    device = device or config.default_device()
                    report = index_with_ray(
                        sources, writer, engine, device=device, precision=precision, address=ray_address, **common
                    )
                else:
                    report = index_paths(sources, writer, engine, workers=workers, **common)
            finally:
                progress.stop()
        if not quiet:
            _print_index_summary(
                report, directory, [*(paths or []), *([f"--from-list {from_list}"] if from_list else [])]
            )
        for root in report.unread_roots:  # an error, with or without --quiet: nothing under it was indexed
            reason = dict([*report.skipped, *report.kept]).get(root, "unreadable")
            _say(False, f"could not read {root} ({reason}): nothing under it was indexed", "[red]error:[/] ")
        if report.unread_roots:
            raise typer.Exit(EXIT_UNREADABLE_ROOT)
        if strict and (report.skipped or report.kept):
            raise typer.Exit(EXIT_SKIPPED)
        if watcher is not None:
            _say(quiet, f"watching {', '.join(watcher.roots)} ({watcher.status.state.mode}); Ctrl-C stops")
            watcher.run()


def _check_watch(watch: bool, poll: float | None, executor: str) -> None:
    """--watch and --poll checked before any model loads: the extra is installed, the run is local."""
    if poll is not None and not watch:
        raise UsageError("`poll` sets how `watch` watches: add `watch`")
    if watch:
        from bt_search.watch.watcher import require_watchfiles

        require_watchfiles()
        if executor != "local":
            raise UsageError("`watch` indexes changes in this process: leave `executor` at local")


def _watcher(
    directory: Path, sources, engine, quiet: bool, poll, batch_size, workers, draft: bool, commit_every: int, video
):
    """The watcher of `index --watch`, collecting changes from before the first run (none falls between them);
    it keeps the run's model loader, so the model loads once."""
    from bt_search.watch.watcher import Watcher, WatchOptions

    options = WatchOptions(
        poll=poll,
        batch_size=batch_size or config.default_batch_size(),
        workers=workers,
        draft=draft,
        commit_rows=commit_every,
        video=video,
    )
    say = lambda message: _say(quiet, message, "[bold]watch:[/] ")  # noqa: E731
    watcher = Watcher(
        directory, [source for source in sources if os.path.isdir(source)], engine, options=options, say=say
    )
    watcher.start()
    return watcher


def _ann_choice(index_type: str | None, memory_budget: str | None) -> dict:
    """--index-type and --memory-budget checked before any model loads (UsageError names the bad value)."""
    from bt_search.store.ann.faiss_index import parse_bytes
    from bt_search.store.ann.policy import normalise_choice

    return {
        "index_type": None if index_type is None else normalise_choice(index_type),
        "memory_budget": None if memory_budget is None else parse_bytes(memory_budget),
    }


class _EngineLoader:
    """Loads the model on the first call (saying so) and returns the same engine on later ones."""

    def __init__(self, model: str, device: str, precision: str, quiet: bool):
        self.model, self.device, self.precision, self.quiet = model, device, precision, quiet
        self.engine = None

    def __call__(self):
        if self.engine is None:
            from bt_search.engine.loading import load_engine  # torch: only where the model runs in this process

            _say(self.quiet, f"loading model {self.model} ...")
            self.engine = load_engine(self.model, device=self.device, precision=self.precision)
        return self.engine


def _index_sources(paths: list[str], from_list: Path | None, executor: str) -> tuple[list[str], list[str]]:
    """PATHS and the --from-list entries; every local PATH must exist (a missing entry becomes a failed row),
    URLs need the Ray executor."""
    from bt_search.media.sources import is_url, read_source_list

    if executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, not {executor!r}")
    entries = read_source_list(from_list) if from_list else []
    if not paths and not entries:
        raise UsageError("nothing to index: give PATHS or --from-list FILE")
    for source in [*paths, *entries]:
        if is_url(source) and executor != "ray":
            raise UsageError(f"{source} is a URL: URLs are read by --executor ray")
    for source in paths:
        if not is_url(source) and not os.path.lexists(source):
            raise UsageError(f"no such file or directory: {source}")
    return list(paths), entries


def _existing_identity(directory: Path):
    """The identity (model, ...) an existing index was built with, so re-runs need no --model and load none
    when nothing changed. A damaged index is reported here, before any model loads (or downloads)."""
    from bt_search.store import IndexReader

    try:
        return IndexReader.open(directory).identity
    except IndexMissingError:
        return None


def _on_terminal() -> bool:
    """Whether stderr is a terminal: bars and "loading model" lines are for a person watching, not for logs."""
    return sys.stderr.isatty()


def _loading(quiet: bool) -> Any:
    """The `on_loading` of open_searcher for `query` and `eval`: one line before the model loads (seconds cold),
    on a terminal and without --quiet."""
    return lambda model: _say(quiet or not _on_terminal(), f"loading model {model} ...")


def _say(quiet: bool, message: str, prefix: str = "") -> None:
    """One line of talk on stderr, none with --quiet: `message` printed as it is (rich markup in it is escaped:
    paths and library text may hold brackets), after `prefix` (markup allowed)."""
    if not quiet:
        err_console.print(prefix + escape(_hinted(message)))


def _print_index_summary(report, directory: Path, sources: list[str]) -> None:
    """The run's summary on stderr; `sources` as given (PATHS, --from-list FILE), for the commands it suggests."""
    _print_counts(report, directory)
    if not (report.found or report.skipped or report.kept or report.unread_roots):
        _say(False, f"found no image files under {', '.join(sources)}", "[yellow]warning:[/] ")
    if report.gone:
        given = " ".join(source if source.startswith("--") else shlex.quote(source) for source in sources)
        _say(
            False,
            f"  {report.gone} indexed file(s) are gone from these folders since they were indexed; their rows are "
            f"kept: `bt-search index {given} --prune` drops them",
        )


def _print_counts(report, directory: Path) -> None:
    from collections import Counter

    if not (report.indexed or report.skipped or report.kept or report.removed):
        err_console.print(
            f"[bold]up to date[/] in {report.seconds:.1f}s: 0 indexed, {report.unchanged} unchanged (nothing new to "
            f"embed); {report.total_images} images in {escape(str(directory))}"
        )
        if report.failed_before:
            err_console.print(f"  {report.failed_before} file(s) that failed before are unchanged and were not retried")
        return
    err_console.print(
        f"[bold]done[/] in {report.seconds:.1f}s: {report.indexed} indexed, {report.unchanged} unchanged, "
        f"{len(report.skipped)} skipped, {report.removed} removed; "
        f"{report.total_images} images in {escape(str(directory))}"
    )
    if report.failed_before:
        err_console.print(f"  {report.failed_before} file(s) that failed before are unchanged and were not retried")
    if report.kept:
        err_console.print(f"  {len(report.kept)} indexed file(s) could not be read this run; their rows are kept")
    reasons = Counter(reason.split(" (")[0] for _, reason in report.skipped)
    for reason, count in reasons.most_common():
        err_console.print(f"  skipped {count:>5} x {escape(reason)}")


def query(**options: Any) -> None:
    """Search the index by text: cosine shortlist, ITM rerank, top K on stdout."""
    from bt_search.cli.query_input import collect_queries
    from bt_search.cli.served import canonical_under, exit_status, served_hits
    from bt_search.output.formats import check_format, default_format

    quiet, null = options["quiet"], options["null"]
    with cli_errors(quiet, picks=_picks(index=options["index"], model=options["model"])):
        fmt = options["fmt"] or ("paths" if null else default_format(sys.stdout.isatty()))
        check_format(fmt, null)  # before the model loads
        queries = collect_queries(options["texts"] or [], options["queries_file"], options["image"])
        options["under"] = canonical_under(options["under"])
        missing = _MissingFiles(quiet)
        # on a terminal: the shortlist, then the rerank's order, served or not
        with live_view(fmt, quiet, err_console) as live:
            served = served_hits(
                options,
                queries,
                on_missing=missing,
                notice=lambda message: _say(quiet, message, "[yellow]note:[/] "),
                on_route=(lambda message: _say(quiet, message)) if options["verbose"] else None,
                on_update=None if live is None else live.update,
            )
            if served is not None:
                results, notes = served
                for note in notes:  # what the search said, as the in-process search says it
                    _say(quiet, _in_cli_words(note))
            else:
                results = _searched(options, queries, missing, live)
        missing.summarize()
        _write_results(results, fmt, null, options["html"], quiet, options["explain_dir"])
        if missing.paths and not any(results) and options["min_match"] is None:
            raise typer.Exit(EXIT_NOTHING_LIVE)
        status = exit_status(options, results)
        if status:
            raise typer.Exit(status)


query.__signature__ = typer_signature(typer)
query.__annotations__ = {name: p.annotation for name, p in query.__signature__.parameters.items()}
app.command()(query)


class _MissingFiles:
    """Files a search found gone: the first few named on stderr as they are met, the rest in one line."""

    NAMED = 3

    def __init__(self, quiet: bool):
        self.quiet, self.paths = quiet, []

    def __call__(self, path: str, reason: str) -> None:
        self.paths.append(path)
        if len(self.paths) <= self.NAMED:
            _say(self.quiet, f"{path!r}: {reason}", "[yellow]skipped[/] ")

    def summarize(self) -> None:
        from bt_search.search.missing import missing_summary

        if len(self.paths) > self.NAMED:
            _say(self.quiet, missing_summary(self.paths), "[yellow]skipped[/] ")


def _searched(options: dict[str, Any], queries: list[str], on_missing: _MissingFiles, live: Any = None):
    """The query searched in this process, by the same function a server answers with (search/query.py);
    `live` (cli/live.LiveResults) shows the hits as they arrive and improve, and the rerank's progress."""
    from bt_search.cli.served import query_request
    from bt_search.search.open import open_searcher
    from bt_search.search.query import run_query

    request = query_request(options, queries)
    request.check()  # a bad --after, --before, --sort or --image fails before the model loads
    if not request.needs_vision() and "torch" not in sys.modules:
        # The text tower alone is many short parallel regions; the rerank's long ones keep OpenMP's default.
        _idle_threads_sleep()
    quiet = options["quiet"]
    searcher = open_searcher(
        _index_dir(options["index"]),
        options["model"],
        device=options["device"],
        precision=options["precision"],
        text_only=not request.needs_vision(),
        batch_size=options["batch_size"],
        on_missing=on_missing,
        on_note=lambda message: _say(quiet, _in_cli_words(message)),
        on_loading=_loading(quiet),
        progress=_rerank_progress(live, quiet or request.image is not None or not request.rerank),
    )
    return run_query(searcher, request, on_update=None if live is None else live.update)


def _rerank_progress(live: Any, unwanted: bool) -> Any:
    """The live view's progress line, else a bar on a terminal (none when unwanted: --quiet, no rerank)."""
    if live is not None:
        return live.progress
    return _RerankBar() if _on_terminal() and not unwanted else None


def _write_results(
    results, fmt: str, null: bool, html: Path | None, quiet: bool, explain_dir: Path | None = None
) -> None:
    from bt_search.output.hits import write_query_output

    write_query_output(results, fmt, sys.stdout, null_separated=null)
    if html is not None:
        from bt_search.output.html_sheet import write_contact_sheet

        write_contact_sheet([hit for hits in results for hit in hits], html)
        _say(quiet, f"wrote {html}")
    if explain_dir is not None:
        from bt_search.output.explanations import write_overlays

        written = write_overlays(results, explain_dir)
        _say(quiet, f"wrote {len(written)} explanation overlay(s) to {explain_dir}")


class _RerankBar:
    """The rerank's progress on stderr in candidates (as `--shortlist` counts them), with their rate and the time
    left; shown only once it has taken a second."""

    def __init__(self, delay_s: float = 1.0, label: str = "reranking"):
        self.delay_s, self.timer, self.done, self.total = delay_s, None, 0, 0
        self.bar = Progress(
            TextColumn(f"[bold]{escape(label)}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("candidates {task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        )
        self.task = self.bar.add_task("rerank", total=None, rate="")

    def __call__(self, done: int, total: int) -> None:
        import threading

        self.done, self.total = done, total
        self.bar.update(self.task, completed=done, total=total)
        speed = self.bar.tasks[0].speed
        if speed:
            self.bar.update(self.task, rate=f"{speed:.1f}/s" if speed >= 1 else f"{1 / speed:.1f} s each")
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


@app.command()
def info(
    index: Path | None = IndexOpt,
    fmt: str = typer.Option("text", "--format", "-f", help="text or json."),
) -> None:
    """What an index holds: model, embedding size, counts, index type, recall, size on disk, last update."""
    from bt_search.output.info import render_info
    from bt_search.store.info import index_info

    with cli_errors(picks=_picks(index=index)):
        facts = index_info(_index_dir(index))
        facts["auto_precision"] = _auto_precision()
        render_info(facts, fmt, sys.stdout, failed_command=_hinted("`bt-search failed`").strip("`"))


def _auto_precision() -> dict[str, str] | None:
    """What a search with the default `--device` and `--precision auto` computes in here (None: that device
    cannot run here). Imports torch: the CPU's features decide the rerank's precision."""
    from bt_search.engine.loading import precision_facts

    try:
        return precision_facts(config.default_device(), "auto")
    except UsageError:
        return None


@app.command()
def failed(
    index: Path | None = IndexOpt,
    fmt: str | None = FormatOpt,
    null: bool = NullOpt,
) -> None:
    """Files that could not be indexed, with their reasons."""
    from bt_search.output.formats import check_format, default_format
    from bt_search.output.info import render_failed
    from bt_search.store.info import failed_rows

    with cli_errors(picks=_picks(index=index)):
        fmt = fmt or ("paths" if null else default_format(sys.stdout.isatty()))
        check_format(fmt, null)
        sys.stdout.reconfigure(errors="surrogateescape")
        render_failed(failed_rows(_index_dir(index)), fmt, sys.stdout, null_separated=null)


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
    watch: bool = typer.Option(
        False, "--watch", help="Keep the index current with the folders it was built from (serve.md, watch mode)."
    ),
    poll: float | None = PollOpt,
    idle_states: bool = typer.Option(
        False,
        "--idle-states",
        help="While idle, compute vision states for candidates recent queries shortlisted but did not rerank.",
    ),
    quiet: bool = QuietOpt,
) -> None:
    """Keep the model and index loaded and answer searches: a JSON API, a search page, and `query` auto-attach."""
    _idle_threads_sleep()  # a served query's text tower is many short parallel regions
    from bt_search.serve.runner import ServeSettings, parse_duration, serve_forever

    with cli_errors(picks=_picks(index=index, model=model)):
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
            watch=watch,
            poll=poll,
            idle_states=idle_states,
        )
        serve_forever(settings, say=lambda message: _say(quiet, message))


def _idle_threads_sleep() -> None:
    """Idle OpenMP threads sleep instead of spinning (call before torch or faiss loads). Work made of many short
    parallel regions is 5-10x slower on a busy machine with spinning threads fighting their own team for cores;
    the numerics are the same (docs/performance.md, "The first hour")."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@app.command()
def duplicates(
    index: Path | None = IndexOpt,
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Cosine of two images' stored embeddings at and above which they are near-duplicates "
        "(default: 0.98, the one `query` folds at).",
    ),
    neighbours: int = typer.Option(
        8, "--neighbours", min=2, help="Nearest images each image is compared with (itself included)."
    ),
    fmt: str | None = FormatOpt,
    null: bool = NullOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Groups of near-duplicate images over the whole index (re-encoded, resized, slightly cropped copies)."""
    _idle_threads_sleep()  # many short FAISS searches
    from bt_search.output.duplicates import render_duplicates
    from bt_search.output.formats import check_format, default_format
    from bt_search.search.duplicates import duplicate_groups
    from bt_search.search.fold import FOLD_COSINE
    from bt_search.search.open import open_index

    with cli_errors(quiet, picks=_picks(index=index)):
        fmt = fmt or ("paths" if null else default_format(sys.stdout.isatty()))
        check_format(fmt, null)
        reader = open_index(_index_dir(index))
        groups = duplicate_groups(
            reader, threshold=FOLD_COSINE if threshold is None else threshold, neighbours=neighbours
        )
        render_duplicates(groups, fmt, sys.stdout, null_separated=null)
        _say(
            quiet,
            f"{len(groups)} group(s) of near-duplicates, {sum(len(g.paths) for g in groups)} images of {len(reader)}",
        )


@app.command("eval")
def eval_command(
    captions: Path = typer.Argument(..., help="Captions: CSV/TSV/JSONL with file,caption, or Karpathy-split JSON."),
    index: Path | None = IndexOpt,
    images_root: Path | None = typer.Option(
        None, "--images-root", help="Folder relative file names start from (default: the captions file's folder)."
    ),
    shortlist: int | None = typer.Option(
        None, "--shortlist", "-n", min=1, help="Cosine candidates reranked by ITM (default: 50 on CUDA, 20 elsewhere)."
    ),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    device: str | None = DeviceOpt,
    precision: str = PrecisionOpt,
    batch_size: int | None = BatchOpt,
    absent: int | None = typer.Option(
        None,
        "--absent",
        min=1,
        help="Instead: hold K captioned images out of the search and report, per --min-match P, how often their "
        "captions are refused and the others still answered.",
    ),
) -> None:
    """Text-to-image Recall@1/5/10 of the shortlist alone and with ITM rerank, and time per query."""
    import json

    from bt_search.search.evaluate import KS, evaluate, evaluate_absent, read_captions
    from bt_search.search.open import open_searcher

    with cli_errors(picks=_picks(index=index)):
        if fmt not in ("table", "json"):
            raise UsageError(f"--format must be table or json, not {fmt!r}")
        pairs = read_captions(captions, images_root)
        searcher = open_searcher(
            _index_dir(index),
            device=device,
            precision=precision,
            batch_size=batch_size,
            on_loading=_loading(False),
            progress=_RerankBar(label="eval: reranking") if _on_terminal() else None,
        )
        if absent is not None:
            _print_abstention(evaluate_absent(searcher, pairs, absent, shortlist=shortlist), fmt)
            return
        report = evaluate(searcher, pairs, shortlist=shortlist)
        if report.skipped_captions:
            _say(False, f"{report.skipped_captions} caption(s) name images not in the index", "[yellow]warning:[/] ")
        if fmt == "json":
            sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
            return
        _print_eval_table(report, KS)


def _print_abstention(report, fmt: str) -> None:
    import json

    from rich.table import Table

    if report.skipped_captions:
        _say(False, f"{report.skipped_captions} caption(s) name images not in the index", "[yellow]warning:[/] ")
    if fmt == "json":
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
        return
    table = Table(
        title=f"--min-match P: {report.absent_queries} captions of {report.absent_images} held-out images (absent), "
        f"{report.present_queries} of indexed ones (present), N={report.shortlist_size}"
    )
    for header in ("P", "absent refused", "present answered", "present: own image kept"):
        table.add_column(header, justify="right")
    for level in report.levels:
        table.add_row(
            f"{level['min_match']:.2f}",
            f"{level['absent_refused']:.3f}",
            f"{level['present_answered']:.3f}",
            f"{level['present_found']:.3f}",
        )
    Console().print(table)


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
