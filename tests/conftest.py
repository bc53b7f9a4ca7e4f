"""Shared fixtures: tiny random BridgeTower checkpoints built offline, once per session (their builders are in
tests/support/checkpoints.py), the engine, sample images and an isolated home for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from bt_search_dev.checkpoints import train_bpe_tokenizer
from tests.support.checkpoints import CAPTIONS, SPECS, build_checkpoint
from tests.support.images import noise_image


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the real home, XDG dirs or bt-search environment."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    for var in ("BT_SEARCH_INDEX", "BT_SEARCH_MODEL", "BT_SEARCH_DEVICE", "BT_SEARCH_BATCH_SIZE", "BT_SEARCH_WORKERS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer(CAPTIONS * 5, path, vocab_size=400)
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the session (every Ray test module shares it); its address and the environment a
    driver subprocess needs to join it."""
    import ray

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    yield context.address_info["gcs_address"], env  # env holds the HOME where Ray keeps its auth token
    ray.shutdown()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {spec.name: build_checkpoint(spec, root, tokenizer_dir) for spec in SPECS}


@pytest.fixture(scope="session")
def tiny_checkpoint(checkpoints) -> Path:
    return checkpoints[SPECS[0].name]


@pytest.fixture(scope="session")
def engine(tiny_checkpoint):
    """The tiny checkpoint loaded on CPU in fp32, the precision whose numbers are the reference's (`auto` may
    rerank in bf16 on this CPU; unit/engine/test_towers_match_reference.py covers it), once per session: tests
    that wrap one of its methods do so with monkeypatch, which puts it back."""
    from bt_search.engine.loading import load_engine

    return load_engine(str(tiny_checkpoint), device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def sample_images() -> list[Image.Image]:
    sizes = [(64, 64), (120, 80), (77, 150), (300, 200), (33, 41)]
    return [noise_image(i, w, h) for i, (w, h) in enumerate(sizes)]


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A private runtime directory ($XDG_RUNTIME_DIR, mode 0700), where servers advertise themselves."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    return run
