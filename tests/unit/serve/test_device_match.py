"""`query` with the default `--device auto` uses a server started with the device `auto` resolves to on this
machine (e.g. `serve --device cpu` on a machine without a GPU), and only that one."""

from __future__ import annotations

import pytest

from bt_search.engine.loading import resolve_device
from bt_search.serve.client import canonical_index, mismatch
from tests.support.serve import build_index, service_for


def health(device_option: str, device: str, auto_device: str) -> dict:
    return {
        "index": canonical_index("/data/idx"),
        "model": "/models/bt",
        "device": device,
        "device_option": device_option,
        "auto_device": auto_device,
        "dtype": "float32",
        "rerank_dtype": "float32",
        "precision_option": "auto",
    }


@pytest.mark.parametrize(
    "server_option, server_device, auto_device, asked, served",
    [
        ("cpu", "cpu", "cpu", "auto", True),  # `serve --device cpu` where auto means cpu
        ("cpu", "cpu", "cuda", "auto", False),  # auto would run on the GPU here
        ("auto", "cuda", "cuda", "auto", True),
        ("auto", "cuda", "cuda", "cpu", False),
        ("auto", "cpu", "cpu", "cpu", True),
        ("cuda", "cuda", "cuda", "cuda", True),
        ("mps", "mps", "mps", "cpu", False),
    ],
)
def test_auto_is_compared_by_what_it_resolves_to(server_option, server_device, auto_device, asked, served):
    reason = mismatch(health(server_option, server_device, auto_device), "/data/idx", "/models/bt", asked, "auto")
    assert (reason is None) == served, reason
    if not served:
        assert reason == f"it runs on {server_device}, not {asked}"


def test_the_server_reports_what_auto_resolves_to(engine, tmp_path):
    service = service_for(build_index(engine, tmp_path, "index", range(970, 972)), engine, device_option="cpu")
    facts = service.health()
    assert facts["auto_device"] == resolve_device("auto").type and facts["device_option"] == "cpu"
    reason = mismatch({**facts, "precision_option": "auto"}, str(service.index_dir), facts["model"], "auto", "auto")
    assert (reason is None) == (resolve_device("auto").type == "cpu"), reason


def test_health_shows_an_int8_rerank_and_answers_only_int8_or_auto(tiny_checkpoint, engine, tmp_path):
    """`/health` names the resolved rerank precision: int8 where `auto` found no native bf16 (or int8 was asked)."""
    from bt_search.engine.loading import load_engine

    int8 = load_engine(str(tiny_checkpoint), device="cpu", precision="int8")
    service = service_for(build_index(engine, tmp_path, "index", range(980, 982)), int8)
    facts = {**service.health(), "precision_option": "auto"}
    assert (facts["dtype"], facts["rerank_dtype"]) == ("float32", "int8")
    for asked, served in (("auto", True), ("int8", True), ("fp32", False), ("bf16", False)):
        reason = mismatch(facts, str(service.index_dir), facts["model"], "auto", asked)
        assert (reason is None) == served, (asked, reason)
