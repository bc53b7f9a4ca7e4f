"""Fixtures of the server's unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A private runtime directory ($XDG_RUNTIME_DIR, mode 0700), where servers advertise themselves."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    return run
