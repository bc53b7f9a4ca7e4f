"""File and folder names that are not UTF-8 (any bytes but / and NUL are a valid POSIX name): indexed, stored
losslessly, and given back byte for byte (issue 22 item 1)."""

from __future__ import annotations

import os

import pytest

from bt_search.indexing.run import index_paths
from bt_search.search.searcher import Searcher
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.cli import bt_search
from tests.support.images import noise_image


@pytest.fixture
def odd_folder(tmp_path):
    """A good name, a Latin-1 name, a name in a Latin-1 folder, and a broken file with a Latin-1 name."""
    root = os.fsencode(tmp_path / "photos")
    os.makedirs(os.path.join(root, b"caf\xe9"))
    names = [b"plain.png", b"ok\xff.png", os.path.join(b"caf\xe9", b"in\xfa.png")]
    for i, name in enumerate(names):
        noise_image(i, 64, 64).save(os.path.join(root, name), "PNG")
    with open(os.path.join(root, b"bad\xfe.jpg"), "wb") as handle:
        handle.write(b"not a picture")
    return root, [os.path.join(root, name) for name in names], os.path.join(root, b"bad\xfe.jpg")


def test_names_that_are_not_utf8_are_indexed_and_query_gives_their_bytes_back(odd_folder, tiny_checkpoint, tmp_path):
    root, images, broken = odd_folder
    index = tmp_path / "index"
    done = bt_search("index", root, "--index", index, "--model", tiny_checkpoint, "-q")
    assert done.returncode == 0, done.stderr
    reader = IndexReader.open(index)
    assert sorted(map(os.fsencode, reader.paths)) == sorted(images)
    assert [(os.fsencode(f.path), f.reason) for f in reader.failed()] == [(broken, "not an image Pillow can read")]

    found = bt_search(
        "query", "a red circle", "--index", index, "-f", "paths", "-0", "--no-fold", text=False
    )  # reranked
    assert found.returncode == 0, found.stderr
    assert sorted(found.stdout.split(b"\0")[:-1]) == sorted(images)
    failed = bt_search("failed", "--index", index, "-f", "paths", "-0", text=False)
    assert failed.stdout == broken + b"\0"


def test_a_rerun_finds_odd_names_unchanged_and_under_finds_an_odd_folder(odd_folder, engine, tmp_path):
    root, images, _ = odd_folder
    with IndexWriter.open(tmp_path / "index", IndexIdentity.of(engine)) as writer:
        first = index_paths([os.fsdecode(root)], writer, engine, workers=0)
    with IndexWriter.open(tmp_path / "index", IndexIdentity.of(engine)) as writer:
        again = index_paths([os.fsdecode(root)], writer, engine, workers=0)
    assert (first.indexed, len(first.skipped)) == (3, 1)
    assert (again.indexed, again.unchanged, again.failed_before, len(again.skipped)) == (0, 3, 1, 0)

    searcher = Searcher(IndexReader.open(tmp_path / "index"), engine)
    (hits,) = searcher.search(["a red circle"], under=os.fsdecode(os.path.join(root, b"caf\xe9")), rerank=False)
    assert [os.fsencode(hit.path) for hit in hits] == [images[2]]


@pytest.mark.parametrize(
    "path",
    [
        "/photos/plain.png",
        "/ünïcødé/写真.png",
        "s3://bucket/a b.png",
        "/new\nline.jpg",
        "/ok\udcff.png",
        "/\udce9/\udc80",
    ],
)
def test_stored_paths_round_trip_and_leave_utf8_as_it_was(path):
    from bt_search.store.stored_paths import original_path, stored_path

    stored = stored_path(path)
    stored.encode("utf-8")  # storable in an Arrow string
    assert original_path(stored) == path
    undecodable = any("\udc80" <= char <= "\udcff" for char in path)
    assert (stored == path) == (not undecodable)  # UTF-8 paths, all that older indexes hold, are unchanged


@pytest.mark.parametrize("path", ["/a\0b.png", "/lone\ud800.png"])
def test_stored_paths_refuse_what_no_file_system_names(path):
    from bt_search.store.stored_paths import stored_path

    with pytest.raises(ValueError):
        stored_path(path)
