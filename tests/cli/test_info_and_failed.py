"""`bt-search info` and `bt-search failed` in every format, checked against what was indexed."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from bt_search.cli.app import app
from bt_search.output.formats import shorter_path
from bt_search.output.info import human_size
from bt_search.store.info import disk_usage, measured_recall
from tests.support.images import noise_image


@pytest.fixture(scope="module")
def index(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    photos = root / "photos"
    photos.mkdir()
    for i in range(3):
        noise_image(i, 50, 40).save(photos / f"ok{i}.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (photos / "a [b] c.jpg").write_bytes(b"")
    index = root / "index"
    result = CliRunner().invoke(
        app, ["index", str(photos), "--index", str(index), "--model", str(tiny_checkpoint), "-q"]
    )
    assert result.exit_code == 0, result.output
    return index, photos


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_info_json(index, tiny_checkpoint):
    directory, _ = index
    info = json.loads(run("info", "--index", directory, "--format", "json"))
    assert info["model"] == str(tiny_checkpoint.resolve()) and info["embedding_dim"] == 32
    assert (info["images"], info["failed"]) == (3, 2) and info["index_type"] == "flat"
    assert info["recall"] is None and info["updated"] and info["capture_info"] is True
    assert info["size_bytes"] == disk_usage(directory) > 0
    assert info["scan_rules"] == {"include_hidden": False, "exclude": []}


def test_info_text(index):
    directory, _ = index
    text = run("info", "--index", directory)
    fields = dict(line.split(":", 1) for line in text.splitlines())
    assert fields["images"].strip() == "3" and fields["failed"].strip().startswith("2")
    assert fields["embedding size"].strip() == "32" and fields["index type"].strip() == "flat"
    assert fields["size on disk"].strip() == human_size(disk_usage(directory))
    assert "not measured" in fields["measured recall"]


@pytest.mark.parametrize("native_bf16, rerank", [(True, "bfloat16"), (False, "int8")])
def test_info_says_what_a_search_computes_in_here(index, monkeypatch, native_bf16, rerank):
    """`auto` on this machine, as serve's /health names it: the rerank in bf16 where the CPU has it, else int8."""
    from bt_search.engine import loading

    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setenv("BT_SEARCH_DEVICE", "cpu")
    directory, _ = index
    info = json.loads(run("info", "--index", directory, "--format", "json"))
    assert info["auto_precision"] == {"device": "cpu", "dtype": "float32", "rerank_dtype": rerank}
    fields = dict(line.split(":", 1) for line in run("info", "--index", directory).splitlines())
    assert fields["search computes"].strip() == f"on cpu: float32 embeddings, {rerank} rerank (precision auto, here)"


def test_measured_recall_is_read_where_the_manifest_records_it():
    assert measured_recall({"faiss": {"recall": 0.97}}) == 0.97
    assert measured_recall({"faiss": None, "measured_recall": {"recall@50": 0.96}}) == {"recall@50": 0.96}
    assert measured_recall({"faiss": {"file": "x"}}) is None


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "paths", "table"])
def test_failed_in_every_format(index, fmt, monkeypatch):
    directory, photos = index
    monkeypatch.setenv("COLUMNS", "400")  # a wide table: one line per failure
    out = run("failed", "--index", directory, "--format", fmt)
    expected = {str(photos / "broken.png"): "truncated or corrupt", str(photos / "a [b] c.jpg"): "empty file"}
    if fmt == "jsonl":
        records = {r["path"]: r for r in map(json.loads, out.splitlines())}
    elif fmt in ("csv", "tsv"):
        rows = csv.DictReader(io.StringIO(out, newline=""), delimiter="," if fmt == "csv" else "\t")
        records = {r["path"]: r for r in rows}
    elif fmt == "paths":
        assert out.splitlines() == sorted(expected)
        return
    else:  # the table shows each path as shorter_path does in the current directory
        expected = {shorter_path(path): reason for path, reason in expected.items()}
        lines = {path: [line for line in out.splitlines() if path in line] for path in expected}
        assert all(len(found) == 1 and expected[path] in found[0] for path, found in lines.items())
        return
    assert set(records) == set(expected)
    for path, reason in expected.items():
        assert records[path]["reason"].startswith(reason)
    assert int(records[str(photos / "broken.png")]["size"]) == (photos / "broken.png").stat().st_size


def test_failed_nul_separated_and_missing_index(index, tmp_path):
    directory, photos = index
    out = run("failed", "--index", directory, "-0")
    assert out.split("\0")[:-1] == sorted([str(photos / "a [b] c.jpg"), str(photos / "broken.png")])
    missing = CliRunner().invoke(app, ["info", "--index", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no index" in missing.output
