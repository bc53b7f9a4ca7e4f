"""Defaults and their environment variables, in one place."""

from __future__ import annotations

import os
from pathlib import Path

from bt_search.errors import UsageError

DEFAULT_MODEL = "BridgeTower/bridgetower-large-itm-mlm-itc"

ENV_MODEL = "BT_SEARCH_MODEL"
ENV_INDEX = "BT_SEARCH_INDEX"
ENV_DEVICE = "BT_SEARCH_DEVICE"
ENV_BATCH_SIZE = "BT_SEARCH_BATCH_SIZE"
ENV_WORKERS = "BT_SEARCH_WORKERS"
ENV_DEBUG = "BT_SEARCH_DEBUG"  # set to show tracebacks of internal errors
ENV_MAX_FILE_MB = "BT_SEARCH_MAX_FILE_MB"

DEFAULT_BATCH_SIZE = 16
DEFAULT_TOP_K = 10
DEFAULT_SCORE = "blend"  # R@1/5/10 >= ITM alone at every N measured on sample_data (docs/performance.md)
DEFAULT_MAX_FILE_MB = 256  # bigger files are skipped unread: a decoder holds the whole file in memory
# `serve --max-queue`: searches that may wait for the model. A shell's `xargs -P 12` of queries waits in line
# instead of being refused; a refused client waits Retry-After and asks again (serve/client.py).
DEFAULT_MAX_QUEUE = 32
# Video frames (media/video.py): a frame is kept when its 16x16 grey thumbnail differs from the last kept frame's
# by at least VIDEO_SCENE_THRESHOLD (mean absolute difference, 0..1), at most `frames_per_minute` a minute (spaced
# evenly) and `max_frames` per video (spread over a long video's duration). The first frame is always kept.
DEFAULT_VIDEO_FRAMES_PER_MINUTE = 12.0
DEFAULT_VIDEO_MAX_FRAMES = 120
VIDEO_SCENE_THRESHOLD = 0.05  # two demo-generator scenes differ by 0.02-0.18; grain averages out at 16x16


def default_model() -> str:
    return os.environ.get(ENV_MODEL) or DEFAULT_MODEL


def default_device() -> str:
    return os.environ.get(ENV_DEVICE) or "auto"


def default_index_dir() -> Path:
    """`$BT_SEARCH_INDEX`, else `$XDG_DATA_HOME/bt-search/default` (XDG default `~/.local/share`)."""
    if os.environ.get(ENV_INDEX):
        return Path(os.environ[ENV_INDEX]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "bt-search" / "default"


def index_dir(index: Path | None) -> Path:
    """The index directory `--index` (or the default) names; UsageError if it is a file."""
    directory = (index or default_index_dir()).expanduser()
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"`index` {directory} is a file, not an index directory; give `index` a directory")
    return directory


def max_file_bytes() -> int:
    """Files larger than this are not read for indexing (env BT_SEARCH_MAX_FILE_MB, in MiB)."""
    return int(float(os.environ.get(ENV_MAX_FILE_MB) or DEFAULT_MAX_FILE_MB) * (1 << 20))


def default_batch_size() -> int:
    return int(os.environ.get(ENV_BATCH_SIZE) or DEFAULT_BATCH_SIZE)


def default_workers(device_type: str) -> int:
    """Decode processes for `index`. On CPU none: draft decoding costs about 3% of the image tower's time
    there, so a worker process overlaps almost nothing and takes a core from torch. On a GPU every core
    but one: an H100 embeds ~1,200 images/s with the large tower, one core decodes ~140 (docs/performance.md)."""
    env = os.environ.get(ENV_WORKERS)
    if env:
        return int(env)
    if device_type == "cpu":
        return 0
    return max(1, (os.cpu_count() or 2) - 1)


def parent_torch_threads(device_type: str, workers: int) -> int | None:
    """Torch CPU threads for the process that feeds a GPU while `workers` decode: None (leave as is) on CPU.

    Its CPU work is small (stacking, copies), and idle OpenMP threads spinning there took cores from the
    decoders: 488 -> 680 images/s on an H100 with 15 workers when cut to one thread (docs/performance.md).
    """
    return None if device_type == "cpu" or workers <= 0 else 1
