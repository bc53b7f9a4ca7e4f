"""Run the CLI as a user does: `python -m bt_search ...` in a subprocess, or the typer app in-process."""

from __future__ import annotations

import os
import subprocess
import sys


def bt_search_env(extra: dict | None = None) -> dict[str, str]:
    """The environment for a `python -m bt_search` child: one decode worker, unbuffered output."""
    env = dict(os.environ, BT_SEARCH_WORKERS="1", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def bt_search(*args, env_extra=None, text=True, **kwargs) -> subprocess.CompletedProcess:
    """`bt-search ARGS` in a fresh interpreter (about 2-4 s of imports: keep these for what needs a process);
    `text=False` keeps stdout as bytes (file names that are not UTF-8), and bytes arguments pass as such."""
    command = [sys.executable, "-m", "bt_search", *(os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args)]
    return subprocess.run(command, capture_output=True, text=text, env=bt_search_env(env_extra), **kwargs)


def cli(*args, input=None):
    """`bt-search ARGS` through typer's CliRunner, in this process."""
    from typer.testing import CliRunner

    from bt_search.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def cli_index(paths, index_dir, model, *extra):
    """`bt-search index PATHS` in-process with inline decoding; asserts it succeeded, returns the result."""
    result = cli("index", *paths, "--index", index_dir, "--model", model, "--workers", "0", *extra)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def indexed_paths(index_dir) -> list[str]:
    """The paths an index holds, sorted."""
    from bt_search.store import IndexReader

    return sorted(IndexReader.open(index_dir).paths)
