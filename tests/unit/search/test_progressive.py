"""Results that arrive first and improve: run_query's `on_update` sees the cosine shortlist, then partial reranks
as chunks finish, before run_query returns the answer; a search reports what it shortlisted but did not
rerank (what an idle server may compute states for)."""

from __future__ import annotations

from bt_search.search.query import QueryRequest, run_query
from bt_search.search.searcher import Searcher

QUERIES = ("a red circle left of a blue square", "two green triangles")


def test_updates_start_with_the_shortlist_and_end_with_the_answer(engine, library):
    reader = library[0]
    updates = []
    request = QueryRequest(queries=QUERIES, top_k=5, shortlist=8)
    final = run_query(Searcher(reader, engine, batch_size=3), request, on_update=updates.append)
    assert final == run_query(Searcher(reader, engine, batch_size=3), request)  # watching changes nothing
    cosine = run_query(Searcher(reader, engine), QueryRequest(queries=QUERIES, top_k=5, shortlist=8, rerank=False))
    assert updates[0] == cosine  # the shortlist first, as a cosine-only search ranks it
    assert updates[-1][0] == final[0]  # the first query done before the last one ends
    # 8 candidates in chunks of at most 3 per query: partial updates for each, one when the first query ends
    assert len(updates) >= 1 + 2 + 1 + 2
    first_partial = updates[1][0]
    done = sum(h.itm is not None for h in first_partial)
    assert 1 <= done <= 3 and [h.itm is not None for h in first_partial] == [True] * done + [False] * (5 - done)
    assert [h.rank for h in first_partial] == [1, 2, 3, 4, 5]
    assert [h.path for h in first_partial[done:]] == [h.path for h in cosine[0][done:5]]  # waiting, cosine order
    assert updates[1][1] == cosine[1]  # the second query keeps its shortlist until its own chunks run
    assert all(h.itm is not None for hits in final for h in hits)


def test_a_search_without_rerank_has_no_update_before_its_answer(engine, library):
    updates = []
    run_query(Searcher(library[0], engine), QueryRequest(queries=QUERIES, rerank=False), updates.append)
    assert updates == []


def test_unreranked_candidates_are_reported_past_the_shortlist(engine, library):
    reader, _, paths, _ = library
    reported = []
    searcher = Searcher(reader, engine, on_unreranked=reported.extend, lookahead=3)
    (hits,) = searcher.search([QUERIES[0]], top_k=2, shortlist=3)
    deeper = Searcher(reader, engine).search([QUERIES[0]], top_k=6, rerank=False)[0]
    assert reported == [(h.path, None) for h in deeper[3:6]]  # the next three by cosine, best first
    assert not {(h.path, None) for h in hits} & set(reported)


def test_video_frames_fold_in_the_updates_and_are_offered_with_their_time(engine, tmp_path):
    from bt_search.indexing.run import index_paths
    from bt_search.media.video import VideoSampling
    from bt_search.store import IndexIdentity, IndexReader, IndexWriter
    from tests.support.images import noise_image
    from tests.support.videos import write_video

    folder = tmp_path / "library"
    folder.mkdir()
    clip = write_video(folder / "clip.mp4", scenes=(0, 1, 2), seconds_each=4)
    for i in range(3):
        noise_image(40 + i, 64, 64).save(folder / f"photo{i}.png")
    with IndexWriter.open(tmp_path / "index", IndexIdentity.of(engine)) as writer:
        index_paths([str(folder)], writer, engine, workers=0, batch_size=2, video=VideoSampling(frames_per_minute=30))
    reader, updates, offered = IndexReader.open(tmp_path / "index"), [], []
    searcher = Searcher(reader, engine, batch_size=1, on_unreranked=offered.extend, lookahead=6)
    request = QueryRequest(queries=(QUERIES[0],), top_k=2, shortlist=2, fold=False)
    (final,) = run_query(searcher, request, updates.append)
    for (hits,) in [*updates, (final,)]:  # a video shows once (its best frame), in every update as in the answer
        videos = [h.path for h in hits if h.t is not None]
        assert len(videos) == len(set(videos)) and [h.rank for h in hits] == list(range(1, len(hits) + 1))
    shortlisted = {
        (h.path, h.t)
        for h in run_query(
            Searcher(reader, engine),
            QueryRequest(queries=(QUERIES[0],), top_k=6, shortlist=6, rerank=False, frames="all", fold=False),
        )[0]
    }
    assert len(offered) == 4 and set(offered) <= shortlisted  # 6 rows, 2 reranked: the other 4, frames as rows
    assert all((t is not None) == (path == str(clip)) for path, t in offered)  # a frame is offered with its time
