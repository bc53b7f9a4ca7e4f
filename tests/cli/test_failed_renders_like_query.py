"""`bt-search failed` prints through the same renderers as `query`: names holding line breaks are refused in
newline mode and kept whole with -0, -0 is refused with other formats, and the table shows control
characters instead of dropping them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

NAMES = ["new\nline.png", "carriage\rreturn.png", "plain.png"]


@pytest.fixture(scope="module")
def index_with_failures(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("failed")
    photos = root / "photos"
    photos.mkdir()
    for name in NAMES:
        (photos / name).write_bytes(b"not an image at all")
    result = bt_search("index", photos, "--index", root / "index", "--model", tiny_checkpoint, "-q")
    assert result.returncode == 0, result.stderr
    return root / "index", photos


def bt_search(*args, **env):
    """The CLI's result with stdout and stderr decoded as written (no newline translation: "\r" stays)."""
    environment = dict(os.environ, BT_SEARCH_WORKERS="0", **env)
    result = subprocess.run([sys.executable, "-m", "bt_search", *map(str, args)], capture_output=True, env=environment)
    result.stdout, result.stderr = (
        stream.decode("utf-8", "surrogateescape") for stream in (result.stdout, result.stderr)
    )
    return result


def test_paths_with_line_breaks_are_refused_in_newline_mode_and_whole_with_nul(index_with_failures):
    index, photos = index_with_failures
    newline = bt_search("failed", "--index", index, "-f", "paths")
    assert newline.returncode == 2 and "contains a line break" in newline.stderr and "-0" in newline.stderr
    nul = bt_search("failed", "--index", index, "-0")
    assert nul.returncode == 0
    assert sorted(nul.stdout.split("\0")[:-1]) == sorted(str(photos / name) for name in NAMES)


def test_nul_separation_is_refused_with_other_formats(index_with_failures):
    index, _ = index_with_failures
    result = bt_search("failed", "--index", index, "-f", "csv", "-0")
    assert result.returncode == 2 and "only applies to the 'paths' format" in result.stderr
    assert result.stdout == ""


def test_the_table_shows_a_carriage_return_as_an_escape(index_with_failures):
    index, _ = index_with_failures
    result = bt_search("failed", "--index", index, "-f", "table", COLUMNS="300")
    assert result.returncode == 0
    assert "carriage\\rreturn.png" in result.stdout
