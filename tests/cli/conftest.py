"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import pytest

from tests.support.cli import cli_index
from tests.support.images import write_pngs


@pytest.fixture(scope="module")
def small_index(tiny_checkpoint, tmp_path_factory):
    """Three photos indexed in-process: (index dir, photo paths). Tests copy it before changing it."""
    root = tmp_path_factory.mktemp("small")
    photos = write_pngs(root / "photos", ["a.png", "b.png", "c.png"], seed=40)
    cli_index([root / "photos"], root / "index", tiny_checkpoint, "--quiet")
    return root / "index", photos
