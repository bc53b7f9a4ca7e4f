"""A warm server notices that its index directory now holds another index, even one with the same generation
and image count (another index, or a copy of the same one that went its own way), and old indexes without
an index id still open."""

from __future__ import annotations

import json
import shutil

from starlette.testclient import TestClient

from bt_search.indexing.run import index_paths
from bt_search.serve.app import build_app
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.images import noise_image
from tests.support.serve import build_index, service_for


def served_paths(client: TestClient) -> set[str]:
    response = client.get("/api/search", params={"q": "a red circle", "top_k": 6, "rerank": "false"})
    assert response.status_code == 200, response.text
    return {hit["path"] for hit in response.json()["hits"]}


def swap(live, replacement, tmp_path, name: str) -> None:
    live.rename(tmp_path / name)
    shutil.copytree(replacement, live)


def test_an_index_swapped_for_another_with_the_same_generation_and_count_is_served(engine, tmp_path):
    a = build_index(engine, tmp_path, "a", range(100, 106))
    b = build_index(engine, tmp_path, "b", range(200, 206))
    first, second = IndexReader.open(a), IndexReader.open(b)
    assert (first.generation, len(first)) == (second.generation, len(second))  # what refresh used to compare
    live = tmp_path / "live"
    shutil.copytree(a, live)
    client = TestClient(build_app(service_for(live, engine), allowed_hosts={"testserver"}, token=None, max_queue=4))
    assert all("/a-photos/" in path for path in served_paths(client))
    swap(live, b, tmp_path, "old")
    assert all("/b-photos/" in path for path in served_paths(client))  # not the old index's cached answer


def test_a_diverged_copy_of_the_same_index_is_not_taken_for_it(engine, tmp_path):
    """A copy shares the index id; the manifest file it holds is still another one."""
    base = build_index(engine, tmp_path, "base", range(100, 105))
    copies = {}
    for name, seed in (("one", 601), ("two", 602)):
        copies[name] = shutil.copytree(base, tmp_path / name)
        extra = tmp_path / f"{name}-extra"
        extra.mkdir()
        noise_image(seed, 64, 64).save(extra / f"{name}.png")
        with IndexWriter.open(copies[name], IndexIdentity.of(engine)) as writer:
            index_paths([str(extra)], writer, engine, workers=0, batch_size=4)
    one, two = IndexReader.open(copies["one"]), IndexReader.open(copies["two"])
    assert one.manifest["index_id"] == two.manifest["index_id"] and one.generation == two.generation
    assert len(one) == len(two) and one.state_id != two.state_id
    live = tmp_path / "live"
    shutil.copytree(copies["one"], live)
    client = TestClient(build_app(service_for(live, engine), allowed_hosts={"testserver"}, token=None, max_queue=4))
    assert str(tmp_path / "one-extra" / "one.png") in served_paths(client)
    swap(live, copies["two"], tmp_path, "old")
    paths = served_paths(client)
    assert str(tmp_path / "two-extra" / "two.png") in paths and str(tmp_path / "one-extra" / "one.png") not in paths


def test_indexes_get_a_random_id_and_old_ones_without_it_still_open(engine, tmp_path):
    index = build_index(engine, tmp_path, "index", range(100, 103))
    reader = IndexReader.open(index)
    assert len(reader.manifest["index_id"]) == 32 and reader.state_id[0] == reader.manifest["index_id"]
    other = IndexReader.open(build_index(engine, tmp_path, "other", range(100, 103)))
    assert other.manifest["index_id"] != reader.manifest["index_id"]
    manifest_path = index / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["index_id"]  # as bt-search wrote manifests before the field existed
    manifest_path.write_text(json.dumps(manifest))
    old = IndexReader.open(index)
    assert old.state_id[0] is None and len(old) == 3 and old.state_id != reader.state_id
    with IndexWriter.open(index, IndexIdentity.of(engine)):
        pass  # a writer opens it too (and keeps it without an id: nothing to commit)


def test_reopening_an_unchanged_index_keeps_its_state_id(engine, tmp_path):
    index = build_index(engine, tmp_path, "index", range(100, 103))
    assert IndexReader.open(index).state_id == IndexReader.open(index).state_id  # no needless cache drops
