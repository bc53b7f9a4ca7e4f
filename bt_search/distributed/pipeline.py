"""`bt-search index --executor ray`: the local indexer's plan and writer, with decode and embed on Ray Data.

Driver (no torch: engine/facts.py reads what it needs of the model): list sources, plan against the index
(skip committed and known-failed files), commit rows as they stream back, finish (compaction + ANN build).
Cluster: decode in CPU tasks, embed in an actor pool (one GPU per actor on CUDA; the model is loaded once
per actor). See docs/distributed.md.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bt_search.distributed.stages import CAPTURE_COLUMNS, LISTING_COLUMNS, Embedder, capture_value, decode_batch
from bt_search.errors import UsageError
from bt_search.indexing.progress import IndexProgress
from bt_search.indexing.run import COMMIT_ROWS, IndexReport, IndexRun
from bt_search.media.scan import FileRecord, Listing
from bt_search.media.scan_rules import ScanRules
from bt_search.media.sources import is_url, list_sources
from bt_search.media.video import VideoSampling
from bt_search.store import FailedRow, ImageRow, IndexWriter

if TYPE_CHECKING:
    from bt_search.engine.facts import ModelFacts
    from bt_search.engine.model import BridgeTowerEngine

MAX_ROWS_PER_BLOCK = 1024  # listing rows per Ray block: small enough to spread, few enough blocks at 100M


@dataclass(frozen=True)
class ActorPlan:
    actors: int
    gpus_per_actor: float
    device: str  # what each actor loads the model onto
    torch_threads: int


def plan_actors(device: str, actors: int | None, cluster: dict[str, float]) -> ActorPlan:
    """One actor per GPU on CUDA (1 torch thread: the GPU does the work); else one CPU actor using the CPUs."""
    gpus, cpus = int(cluster.get("GPU", 0)), max(1, int(cluster.get("CPU", 1)))
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"`device={device}` is not available with `executor=ray`; use auto, cpu or cuda")
    if device == "cuda" and gpus == 0:
        raise UsageError("`device=cuda`, but the Ray cluster has no GPUs")
    if device == "cuda" or (device == "auto" and gpus > 0):
        return ActorPlan(actors or gpus, 1.0, "cuda", 1)
    count = actors or 1
    return ActorPlan(count, 0.0, "cpu", max(1, cpus // count))


def rows_per_block(n_rows: int, cpus: int, batch_size: int) -> int:
    """Listing rows per block: about two blocks per CPU, so every decode core gets work, capped for 100M runs;
    a whole number of batches, so the actors never embed a short batch mid-run."""
    rows = max(1, min(MAX_ROWS_PER_BLOCK, math.ceil(n_rows / (2 * max(1, cpus)))))
    return math.ceil(rows / batch_size) * batch_size


def index_with_ray(
    sources: Sequence[str],
    writer: IndexWriter,
    engine: BridgeTowerEngine | ModelFacts,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 16,
    actors: int | None = None,
    decode_cpus: float = 1.0,
    draft: bool = True,
    prune: bool = False,
    index_type: str | None = None,
    commit_rows: int = COMMIT_ROWS,
    address: str | None = None,
    progress: IndexProgress | None = None,
    rules: ScanRules | None = None,
    prune_excluded: bool = False,
    list_entries: Sequence[str] = (),
    video: VideoSampling | None = None,
) -> IndexReport:
    """Bring the index up to date with `sources` (folders, files, URLs), embedding on a Ray cluster.

    Videos are decoded in the decode tasks by the local indexer's sampler (`video`: how, None: the defaults); a
    video's frame rows are committed together once all have come back.

    `list_entries` (read from a source list) are indexed like `sources`, except that one that does not exist
    becomes a failed row instead of stopping the run.

    `engine` names the checkpoint and gives the preprocessing: `engine.facts.driver_model` (no torch) or any
    engine, since the actors load their own. `address`: a running cluster (default: RAY_ADDRESS, else a local
    Ray for the run); a Ray already initialised in this process is used as it is.
    """
    run = IndexRun.begin(writer, progress or IndexProgress(), commit_rows, rules)
    listed: Listing = {}
    records, problems = list_sources(
        sources, skip=[writer.directory], listed=listed, rules=run.rules, list_entries=list_entries
    )
    roots = [s for s in [*sources, *list_entries] if not is_url(s)]
    given = [s for s in sources if not is_url(s)]
    work = run.plan(records, problems, listed, roots, prune, prune_excluded, given=given)
    if work.to_embed:
        with ray_session(address):
            dataset = embedding_dataset(
                work.to_embed, engine, device, precision, batch_size, actors, decode_cpus, draft, video
            )
            waiting: dict[str, list[ImageRow]] = {}  # a video's frames that came back so far
            # prefetch_batches=0: each batch as soon as it is embedded (prefetching held one back until the next)
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                rows, failed = rows_and_failures(batch, waiting)
                run.add(rows, [(f.path, f.reason, f.size, f.mtime_ns) for f in failed])
    return run.finish(index_type)


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use the Ray this process already joined, else join `address` (None: RAY_ADDRESS or a new local Ray)."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=address, log_to_driver=False, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def embedding_dataset(
    records, engine, device, precision, batch_size, actors=None, decode_cpus=1.0, draft=True, video=None
):
    """The Ray Dataset of embedded rows for `records`: listing -> decode tasks -> embed actors (lazy: nothing
    runs until it is iterated)."""
    import ray

    with warnings.catch_warnings():  # Ray's own deprecation notices about options this code never sets
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller draws its own progress
    cluster = ray.cluster_resources()
    actor_plan = plan_actors(device, actors, cluster)
    # paths travel as bytes: a name that is not UTF-8 (a str with surrogates) would not fit an Arrow string
    listing = [{"path": os.fsencode(r.path), "size": r.size, "mtime_ns": r.mtime_ns} for r in records]
    blocks = math.ceil(len(records) / rows_per_block(len(records), int(cluster.get("CPU", 1)), batch_size))
    dataset = ray.data.from_items(listing, override_num_blocks=blocks)
    decoded = dataset.map_batches(
        decode_batch,
        fn_kwargs={"prep": engine.preprocessing, "draft": draft, "video": video},
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=decode_cpus,
    )
    return decoded.map_batches(
        Embedder,
        fn_constructor_kwargs={
            "model": engine.model_id,
            "revision": engine.revision,
            "device": actor_plan.device,
            "precision": precision,
            "fingerprint": engine.embedding_fingerprint(),
            "threads": actor_plan.torch_threads,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actor_plan.actors),
        num_gpus=actor_plan.gpus_per_actor,
        num_cpus=1,
        # OpenMP's pool as torch's (Ray would size it by num_cpus). It also keeps the stages apart: Ray Data fuses
        # a task stage into the next actor stage whose options match, and fused, each actor would decode between
        # its batches, none of them while the model loads. Its cost: the actor cannot take an idle worker
        # (0.7-1 s more to start, measured at load 9 on 2 cores), against seconds of decoding moved off it.
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(actor_plan.torch_threads)}},
    )


def rows_and_failures(
    batch: dict[str, np.ndarray], waiting: dict[str, list[ImageRow]] | None = None
) -> tuple[list[ImageRow], list[FailedRow]]:
    """One embedded batch -> index rows for the images and failure rows (same reasons as local) for the rest.

    A video's frames are returned together, in frame order, once all of them (`frames`) have come: until then
    they wait in `waiting` (None: a dict for this batch alone), so a video is committed as a unit."""
    waiting = {} if waiting is None else waiting
    rows, failed = [], []
    names = (*LISTING_COLUMNS, "sha256", "width", "height", "error", "embedding", "frame_time", "frames")
    columns = zip(*(batch[c] for c in names), *(batch[c] for c in CAPTURE_COLUMNS))
    for path, size, mtime_ns, sha256, width, height, error, embedding, time, frames, *capture in columns:
        record = FileRecord(os.fsdecode(path), int(size), int(mtime_ns))
        if error:
            failed.append(FailedRow(record.path, str(error), record.size, record.mtime_ns))
            continue
        taken_at, make, model = map(capture_value, capture)
        row = ImageRow(
            record.path,
            record.size,
            record.mtime_ns,
            str(sha256),
            int(width),
            int(height),
            embedding,
            taken_at=taken_at,
            camera_make=make,
            camera_model=model,
            frame_time=None if np.isnan(time) else float(time),
        )
        if row.frame_time is None:
            rows.append(row)
            continue
        arrived = waiting.setdefault(row.path, [])
        arrived.append(row)
        if len(arrived) == int(frames):
            rows.extend(sorted(waiting.pop(row.path), key=lambda frame: frame.frame_time))
    return rows, failed
