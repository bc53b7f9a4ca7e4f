"""Running the real `bt-search` command in a subprocess, as a user does (PYTHONPATH carries this checkout)."""

from __future__ import annotations

import os
import subprocess
import sys


def bt_search(*args, env_extra=None, text=True, **kwargs) -> subprocess.CompletedProcess:
    """`python -m bt_search ARGS`; `text=False` keeps stdout as bytes (file names that are not UTF-8)."""
    env = dict(os.environ, BT_SEARCH_WORKERS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    command = [
        sys.executable,
        "-m",
        "bt_search",
        *(os.fsdecode(arg) if isinstance(arg, bytes) else str(arg) for arg in args),
    ]
    return subprocess.run(command, capture_output=True, text=text, env=env, **kwargs)
