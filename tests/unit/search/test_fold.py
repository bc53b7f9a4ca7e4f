"""Near-duplicates: `query` folds them into the best hit (in the one shared path, run_query), and
`duplicates` groups them over the whole index through bounded nearest-neighbour searches.

The library is demo_data scenes indexed with the shipped demo model: each scene, a quality-60 JPEG of it, a copy
at half size and one cropped by 1% a side (all copies: grouped), and a second render of the same caption (a
distinct picture with the same caption: never grouped). A random checkpoint cannot tell those apart
(docs/performance.md, "Near-duplicates"), so these tests use the trained toy model."""

from __future__ import annotations

import numpy as np
import pytest

from bt_search.engine.loading import load_engine
from bt_search.indexing.run import index_paths
from bt_search.search.duplicates import duplicate_groups, union_groups
from bt_search.search.fold import FOLD_COSINE, fold_groups, fold_hits
from bt_search.search.hits import Hit
from bt_search.search.query import QueryRequest, run_query
from bt_search.search.searcher import Searcher
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from tests.support.copies import same_caption_pairs, write_library
from tests.support.paths import DEMO_MODEL

SCENES = 5


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("fold")
    groups = write_library(root / "photos", SCENES)
    engine = load_engine(str(DEMO_MODEL), device="cpu", precision="fp32")
    with IndexWriter.open(root / "index", IndexIdentity.of(engine)) as writer:
        index_paths([str(root / "photos")], writer, engine, workers=0, batch_size=16)
    reader = IndexReader.open(root / "index")
    assert len(reader) == SCENES * 5 and not reader.failed()
    return reader, engine, {name: [str(p) for p in paths] for name, paths in groups.items()}


def test_copies_are_grouped_and_distinct_renders_of_a_caption_are_not(library):
    reader, _, groups = library
    found = {group.paths for group in duplicate_groups(reader)}
    assert found == {tuple(sorted(paths)) for name, paths in groups.items() if not name.endswith("-other")}


def test_duplicates_searches_each_row_once_with_a_small_k(library, monkeypatch):
    """O(N·k): every row is a query exactly once, k stays `neighbours`; no N x N matrix is ever asked for."""
    reader, _, groups = library
    calls = []
    search = reader.search
    monkeypatch.setattr(
        reader, "search", lambda queries, k, **kw: calls.append((len(queries), k)) or search(queries, k, **kw)
    )
    monkeypatch.setattr(type(reader), "embeddings", property(lambda self: pytest.fail("read every embedding")))
    found = duplicate_groups(reader, neighbours=3, batch=7)
    assert sum(n for n, _ in calls) == len(reader) and all(n <= 7 and k == 3 for n, k in calls)
    # k = 3 (a row and two others) still joins each group of four through its members' neighbours
    assert sorted(len(g.paths) for g in found) == [4] * SCENES
    assert all(g.similarities[0] == 1.0 and min(g.similarities) >= FOLD_COSINE for g in found)


def test_union_groups_joins_chains_and_leaves_singletons_out():
    firsts, seconds = np.array([1, 2, 7, 5]), np.array([2, 3, 9, 9])
    assert union_groups(firsts, seconds) == [[1, 2, 3], [5, 7, 9]]


def test_fold_groups_joins_the_nearest_earlier_leader_only():
    # b is a copy of a; c is near b's side but further than the threshold from a: it leads its own group
    a = np.array([1.0, 0.0])
    b = np.array([np.cos(0.15), np.sin(0.15)])
    c = np.array([np.cos(0.3), np.sin(0.3)])
    rows = np.stack([a, b, c, a])
    assert fold_groups(rows, threshold=float(np.cos(0.2))) == [[0, 1, 3], [2]]


def test_fold_hits_keeps_the_best_and_lists_the_rest():
    hits = [Hit("q", i + 1, f"/p/{i}.png", 1.0 - i / 10, 0.5, i + 1) for i in range(4)]
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    folded = fold_hits(hits, rows, top_k=5)
    assert [(h.rank, h.path, h.duplicates) for h in folded] == [
        (1, "/p/0.png", ("/p/2.png",)),
        (2, "/p/1.png", ("/p/3.png",)),
    ]
    assert folded[1].score == hits[1].score and fold_hits(hits, rows, top_k=1) == folded[:1]


@pytest.mark.parametrize("rerank", [False, True])
def test_query_folds_copies_and_still_fills_top_k(library, rerank):
    reader, engine, groups = library
    searcher = Searcher(reader, engine, batch_size=16)
    caption = same_caption_pairs(1)[0][0]
    request = QueryRequest(queries=(caption,), top_k=4, shortlist=8, rerank=rerank)
    (folded,) = run_query(searcher, request)
    (plain,) = run_query(searcher, QueryRequest(queries=(caption,), top_k=25, shortlist=25, rerank=rerank, fold=False))
    group_of = {
        path: name.removesuffix("-other") + ("'" if name.endswith("-other") else "")
        for name, paths in groups.items()
        for path in paths
    }
    # 4 hits, all distinct pictures, though the first 8 candidates hold only 2-3 of them: the search looked deeper
    assert len(folded) == 4 and len({group_of[h.path] for h in folded}) == 4
    assert [h.rank for h in folded] == [1, 2, 3, 4]
    for hit in folded:  # each shown hit is the best-ranked of its group, and carries the rest of it
        members = [h.path for h in plain if group_of[h.path] == group_of[hit.path]]
        assert hit.path == members[0] and hit.duplicates == tuple(members[1:])
        assert len(hit.duplicates) == (3 if not group_of[hit.path].endswith("'") else 0)
    (unfolded,) = run_query(searcher, QueryRequest(queries=(caption,), top_k=4, shortlist=8, rerank=rerank, fold=False))
    assert [h.path for h in unfolded] == [h.path for h in plain[:4]] and all(not h.duplicates for h in unfolded)


def test_folding_reads_the_rows_the_search_found_not_the_path_column(library, monkeypatch):
    reader, engine, groups = library
    searcher = Searcher(reader, engine)
    (expected,) = run_query(searcher, QueryRequest(queries=(same_caption_pairs(1)[0][0],), top_k=4, rerank=False))

    def no_scan(expression):
        raise AssertionError(f"folding scanned the index: {expression}")

    monkeypatch.setattr(reader, "ids_where", no_scan)
    (folded,) = run_query(searcher, QueryRequest(queries=(same_caption_pairs(1)[0][0],), top_k=4, rerank=False))
    assert folded == expected and any(hit.duplicates for hit in folded)


def test_an_image_query_folds_its_own_copies(library):
    reader, engine, groups = library
    (hits,) = run_query(Searcher(reader, engine), QueryRequest(image=groups["s01"][0], top_k=3))
    assert hits[0].path == groups["s01"][0] and sorted(hits[0].duplicates) == sorted(groups["s01"][1:])
    assert len(hits) == 3


def test_an_index_without_an_ann_file_is_searched_through_a_temporary_ivf(monkeypatch):
    """A flat index would search exactly, O(N) a row: from TEMPORARY_IVF_ROWS rows duplicates builds an IVF."""
    from bt_search.search import duplicates

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    copies = rng.choice(3000, size=(40, 2), replace=False)
    noisy = vectors[copies[:, 0]] + 0.02 * rng.standard_normal((40, 32)).astype(np.float32)
    vectors[copies[:, 1]] = noisy
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    class FlatReader:
        uses_faiss_file = True
        manifest = {"index_type": "flat"}
        identity = type("Identity", (), {"embedding_dim": 32})()

        def ids(self):
            return np.arange(3000)

        def embeddings_for(self, rows):
            return vectors[np.asarray(rows)]

        def search(self, queries, k, **kwargs):
            pytest.fail("searched the flat index exactly")

    monkeypatch.setattr(duplicates, "TEMPORARY_IVF_ROWS", 1000)
    firsts, seconds = duplicates.duplicate_pairs(FlatReader(), threshold=0.99, batch=512)
    assert set(zip(firsts.tolist(), seconds.tolist())) == {tuple(sorted(pair)) for pair in copies.tolist()}


def test_duplicates_command_lists_each_group_with_the_one_to_keep(library):
    import json

    from typer.testing import CliRunner

    from bt_search.cli.app import app

    reader, _, groups = library
    result = CliRunner().invoke(app, ["duplicates", "--index", str(reader.directory), "-f", "jsonl"])
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert list(rows[0]) == ["group", "size", "path", "similarity", "keep"]
    by_group = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row)
    expected = sorted(sorted(paths) for name, paths in groups.items() if not name.endswith("-other"))
    assert sorted([r["path"] for r in members] for members in by_group.values()) == expected
    assert all([r["keep"] for r in members] == [True, False, False, False] for members in by_group.values())
    assert f"{SCENES} group(s) of near-duplicates, {SCENES * 4} images of {SCENES * 5}" in result.stderr
