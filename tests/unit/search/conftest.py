"""Fixtures shared by the search tests."""

from __future__ import annotations

import pytest

from bt_search.indexing.run import index_paths
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.images import noise_image


@pytest.fixture(scope="module")
def library(engine, tmp_path_factory):
    """Eight indexed noise photos and one outside the index (for --like): (reader, index dir, paths, like)."""
    root = tmp_path_factory.mktemp("terms")
    photos = root / "photos"
    photos.mkdir()
    paths = []
    for i in range(8):
        path = photos / f"t{i}.png"
        noise_image(700 + i, 64 + 4 * i, 64).save(path)
        paths.append(str(path))
    like = root / "like.png"
    noise_image(799, 80, 64).save(like)
    with IndexWriter.open(root / "index", IndexIdentity.of(engine)) as writer:
        index_paths([str(photos)], writer, engine, workers=0, batch_size=4)
    return IndexReader.open(root / "index"), root / "index", paths, str(like)
