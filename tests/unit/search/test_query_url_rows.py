"""Rows indexed from URLs (`--from-list` of file://, s3://, gs://) are found and reranked through the reader that
indexed them, and their existence is checked in one batch per round (issue 22 item 3)."""

from __future__ import annotations

from urllib.parse import unquote

import numpy as np
import pytest

from bt_search.media.decoding import decode_record
from bt_search.media.scan import FileRecord
from bt_search.search import searcher as search_module
from bt_search.search.searcher import Searcher
from bt_search.store import ImageRow, IndexIdentity, IndexReader, IndexWriter
from tests.support.images import noise_image


@pytest.fixture
def url_index(engine, tmp_path):
    """Six images indexed under file:// URLs, as `--executor ray` stores a --from-list of URLs."""
    paths = []
    for i in range(6):
        paths.append(tmp_path / "bucket" / f"img {i}.png")  # a space: the URL is percent-encoded
        paths[-1].parent.mkdir(exist_ok=True)
        noise_image(40 + i, 64, 64).save(paths[-1])
    decoded = [decode_record(FileRecord(str(path), 0, 0), engine.preprocessing, draft=True) for path in paths]
    embeddings = engine.encode_images(np.stack([d.pixels for d in decoded]))
    urls = [path.as_uri() for path in paths]
    with IndexWriter.open(tmp_path / "index", IndexIdentity.of(engine)) as writer:
        writer.commit([ImageRow(u, 1, 1, d.sha256, d.width, d.height, e) for u, d, e in zip(urls, decoded, embeddings)])
        writer.finish()
    return tmp_path / "index", urls, tmp_path / "bucket"


def test_url_rows_are_found_and_reranked_and_a_deleted_one_is_reported(url_index, engine, monkeypatch):
    index, urls, bucket = url_index
    missing = []
    searcher = Searcher(IndexReader.open(index), engine, on_missing=lambda path, reason: missing.append((path, reason)))

    (reranked,) = searcher.search(["a red circle"], top_k=6, shortlist=6)
    assert sorted(hit.path for hit in reranked) == sorted(urls) and not missing

    (nearest,) = searcher.search(["a red circle"], top_k=1, rerank=False)
    gone = nearest[0].path
    (bucket / unquote(gone.rsplit("/", 1)[1])).unlink()
    checks, check = [], search_module.existing_files
    monkeypatch.setattr(search_module, "existing_files", lambda paths: checks.append(list(paths)) or check(paths))
    (after,) = searcher.search(["a red circle"], top_k=5, shortlist=5)
    assert sorted(hit.path for hit in after) == sorted(set(urls) - {gone})
    assert missing == [(gone, "no longer exists (moved or deleted since indexing)")]
    assert [len(paths) for paths in checks] == [5, 1]  # one batched check per round, each path once
