"""The store's ANN file: kinds chosen by size and memory budget, tuned recall recorded, incremental upkeep."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bt_search.cli.app import app
from bt_search.store import ImageRow, IndexIdentity, IndexReader, IndexWriter
from bt_search.store.ann import faiss_index, policy
from tests.support.ann_data import clustered_image_vectors, gap_shifted_queries

DIM = 64
IDENTITY = IndexIdentity("tiny/bridgetower", "abc123", DIM, {"size": 288})
K = 50


def rows(vectors: np.ndarray, start: int = 0, version: int = 0) -> list[ImageRow]:
    return [
        ImageRow(f"/p/{start + i}.jpg", 1 + version, 1, f"sha-{start + i}-{version}", 8, 8, v)
        for i, v in enumerate(vectors)
    ]


def collection(n: int, seed: int = 0) -> np.ndarray:
    return clustered_image_vectors(n, DIM, np.random.default_rng(seed))


def build(directory, vectors: np.ndarray, index_type: str | None = None, memory_budget: int | None = None) -> dict:
    with IndexWriter.open(directory, IDENTITY) as writer:
        for start in range(0, len(vectors), 1000):
            writer.commit(rows(vectors[start : start + 1000], start))
        writer.finish(index_type, memory_budget)
        return writer.manifest


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist(), strict=True)]))


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_sq8", "ivf_pq", "hnsw"])
def test_text_like_queries_keep_recall_and_exact_scores_through_the_store(tmp_path, kind):
    vectors = collection(4000)
    manifest = build(tmp_path, vectors, kind)
    entry = manifest["ann"]
    assert entry["type"] == kind and manifest["index_type"] == kind
    assert entry["recall"]["measured"] >= entry["recall"]["target"], entry  # tuned on held-out queries
    assert (entry["exact_copy"] is not None) == (kind in ("ivf_sq8", "ivf_pq"))

    queries = gap_shifted_queries(vectors, 100, np.random.default_rng(1))
    reader = IndexReader.open(tmp_path)
    similarities, ids = reader.search(queries, K)  # row ids = positions: rows were committed in order

    assert recall(ids, exact_top(vectors, queries, K)) >= 0.95
    np.testing.assert_allclose(similarities, np.take_along_axis(queries @ vectors.T, ids, axis=1), atol=1e-5)


def test_auto_picks_ivf_pq_past_the_memory_budget_and_keeps_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(faiss_index, "FLAT_MAX_VECTORS", 1000)
    vectors = collection(3000)
    flat_bytes = len(vectors) * (4 * DIM + faiss_index.ID_BYTES)
    assert build(tmp_path / "roomy", vectors, memory_budget=2 * flat_bytes)["index_type"] == "ivf_flat"
    assert build(tmp_path / "snug", vectors, memory_budget=flat_bytes // 2)["index_type"] == "ivf_sq8"
    tight = build(tmp_path / "tight", vectors, memory_budget=flat_bytes // 8)
    assert tight["index_type"] == "ivf_pq" and tight["memory_budget"] == flat_bytes // 8
    with IndexWriter.open(tmp_path / "tight", IDENTITY) as writer:  # a later run without the flag
        writer.commit(rows(collection(3, seed=5), start=9000))
        writer.finish()
        assert writer.manifest["index_type"] == "ivf_pq" and writer.manifest["memory_budget"] == flat_bytes // 8


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_sq8", "ivf_pq", "hnsw"])
def test_small_changes_fold_in_without_retraining_and_dead_rows_never_return(tmp_path, kind):
    vectors = collection(3000)
    before = build(tmp_path, vectors, kind)["ann"]
    added, replaced = collection(10, seed=7), collection(5, seed=8)
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(
            rows(added, start=5000) + rows(replaced, start=0, version=1), removed=[f"/p/{i}.jpg" for i in range(5, 10)]
        )
        writer.finish()
        after = writer.manifest["ann"]
        next_row_id = writer.manifest["next_row_id"]

    assert after["built_because"] == before["built_because"] and after["trained_rows"] == 3000  # no rebuild
    assert after["file"] != before["file"] and after["covered_below"] == next_row_id  # folded in
    reader = IndexReader.open(tmp_path)
    similarities, ids = reader.search(np.concatenate([added, replaced]), 1)
    assert reader.paths_for(ids[:, 0]) == [f"/p/{5000 + i}.jpg" for i in range(10)] + [f"/p/{i}.jpg" for i in range(5)]
    np.testing.assert_allclose(similarities[:, 0], 1.0, atol=1e-5)
    _, everything = reader.search(vectors[:3], len(reader))
    assert not np.isin(everything, np.arange(10)).any(), "a replaced or removed row came back"
    assert all(len(set(row)) == len(reader) == 3005 for row in everything.tolist())
    if kind == "hnsw":  # a graph cannot drop nodes: masked
        assert after["rows"] == 3015 and after["dead"] == 10
    else:  # flat and IVF lists drop them
        assert after["rows"] == 3005 and after["dead"] == 0


def test_a_large_ann_file_is_not_rewritten_for_a_few_new_rows(tmp_path, monkeypatch):
    vectors = collection(2000)
    before = build(tmp_path, vectors, "ivf_pq")["ann"]
    monkeypatch.setattr(policy, "CHEAP_REWRITE_BYTES", 0)
    added = collection(10, seed=9)
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(rows(added, start=5000))
        writer.finish()
        kept = writer.manifest["ann"]
    assert kept["file"] == before["file"] and kept["covered_below"] == before["covered_below"]  # fresh rows wait
    reader = IndexReader.open(tmp_path)
    assert reader.paths_for(reader.search(added, 1)[1][:, 0]) == [f"/p/{5000 + i}.jpg" for i in range(10)]

    monkeypatch.setattr(policy, "FRESH_MAX_ROWS", 15)
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(rows(collection(10, seed=10), start=6000))
        writer.finish()
        folded = writer.manifest["ann"]
    assert folded["covered_below"] == writer.manifest["next_row_id"] and folded["trained_rows"] == 2000


def test_an_ivf_index_is_retrained_after_it_doubles(tmp_path):
    build(tmp_path, collection(1000), "ivf_flat")
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.commit(rows(collection(1100, seed=3), start=1000))
        writer.finish()
        entry = writer.manifest["ann"]
    assert entry["trained_rows"] == 2100 and "grew" in entry["built_because"]


def test_an_ann_file_from_before_tuning_is_searched_then_rebuilt(tmp_path):
    vectors = collection(2000)
    build(tmp_path, vectors, "ivf_flat")
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    old = {key: value for key, value in manifest["ann"].items() if key not in ("params", "recall", "choice")}
    manifest.update(ann={**old, "type": "ivf"}, index_type="ivf", index_choice="ivf")
    manifest_path.write_text(json.dumps(manifest))

    queries = gap_shifted_queries(vectors, 20, np.random.default_rng(2))
    assert recall(IndexReader.open(tmp_path).search(queries, K)[1], exact_top(vectors, queries, K)) >= 0.9
    with IndexWriter.open(tmp_path, IDENTITY) as writer:
        writer.finish()
        entry = writer.manifest["ann"]
    assert entry["type"] == "ivf_flat" and "params" in entry and "older bt-search" in entry["built_because"]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--memory-budget", "lots", "not a size"),
        ("--memory-budget", "0", "must be positive"),
        ("--index-type", "lsh", "unknown index type"),
    ],
)
def test_bad_ann_options_are_usage_errors_before_any_model_loads(tmp_path, flag, value, message):
    result = CliRunner().invoke(
        app,
        [
            "index",
            str(tmp_path),
            "--index",
            str(tmp_path / "idx"),
            "--model",
            str(tmp_path / "no-such-model"),
            flag,
            value,
        ],
    )
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_sq8", "ivf_pq"])
def test_the_faiss_recipe_in_docs_format_reads_the_ann_file_without_bt_search(tmp_path, kind):
    import faiss

    vectors = collection(2000)
    manifest = build(tmp_path, vectors, kind)
    index = faiss.read_index(str(tmp_path / manifest["ann"]["file"]), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", manifest["ann"]["params"]["nprobe"] or 1)
    _, row_ids = index.search(vectors[:20], 1)
    assert np.mean(row_ids[:, 0] == np.arange(20)) >= 0.9  # ids are row ids (PQ ranks approximately)
