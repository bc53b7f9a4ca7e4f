"""Issue 23, items 4-11: the CLI says what is happening. Messages and exit statuses, in-process (CliRunner)."""

from __future__ import annotations

import sys

from bt_search import __version__
from tests.support.cli import cli

# --- item 10: --version and -h ---------------------------------------------------------------------------------


def test_version_and_short_help():
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"bt-search {__version__}\n"
    for args in (["-h"], ["query", "-h"], ["index", "-h"], ["info", "-h"]):
        result = cli(*args)
        assert result.exit_code == 0 and "Usage: " in result.stdout, args


# --- item 11: rich markup in messages is printed as text -------------------------------------------------------


def test_the_missing_extra_message_keeps_its_brackets(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    result = cli("serve", "--index", tmp_path)
    assert result.exit_code == 1
    assert "pip install 'bt-search[serve]'" in result.stderr


def test_paths_with_brackets_survive_errors_and_skip_lines(tiny_checkpoint, tmp_path):
    result = cli("info", "--index", tmp_path / "photos[bold]")
    assert result.exit_code == 1 and "photos[bold]" in result.stderr
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "[red]broken.png").write_bytes(b"not a png")
    result = cli("index", tmp_path / "in", "--index", tmp_path / "idx", "--model", tiny_checkpoint, "--workers", "0")
    assert result.exit_code == 0, result.stderr
    assert "[red]broken.png" in result.stderr and "idx" in result.stderr
