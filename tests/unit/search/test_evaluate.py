"""`bt-search eval`: recall arithmetic on a hand-made case, and every captions format."""

from __future__ import annotations

import json

import pytest

from bt_search.errors import UsageError
from bt_search.search.evaluate import (
    Caption,
    abstention_levels,
    evaluate,
    evaluate_absent,
    held_out,
    read_captions,
    recall_at_k,
)
from bt_search.search.hits import Hit


def test_recall_at_k_by_hand():
    ranks = [1, 2, 5, 6, None, 10, 11, 1]
    assert recall_at_k(ranks, (1, 5, 10)) == {1: 2 / 8, 5: 4 / 8, 10: 6 / 8}
    assert recall_at_k([], (1,)) == {1: 0.0}


class ScriptedSearcher:
    """Returns fixed rankings, so the expected recalls can be worked out by hand."""

    def __init__(self, paths, cosine, reranked):
        self.reader = type("Reader", (), {"indexed_paths": lambda _, wanted: set(wanted) & set(paths)})()
        self.rankings = {False: cosine, True: reranked}

    def search(self, queries, *, top_k, shortlist, rerank, score=None):
        return [
            [Hit(q, r + 1, p, 1.0 - r / 100, 0.5, r + 1) for r, p in enumerate(self.rankings[rerank][q][:top_k])]
            for q in queries
        ]


def test_evaluate_counts_ranks_of_the_true_image():
    paths = [f"/img/{i}.png" for i in range(12)]
    captions = [
        Caption("/img/0.png", "zero"),
        Caption("/img/1.png", "one"),
        Caption("/img/2.png", "two"),
        Caption("/img/99.png", "not indexed"),
    ]
    filler = paths[3:]  # images no caption describes
    cosine = {
        "zero": [filler[0], "/img/0.png"] + filler[1:],  # rank 2
        "one": filler[:7] + ["/img/1.png"],  # rank 8
        "two": filler + ["/img/0.png"],  # not in the list at all
    }
    reranked = {"zero": ["/img/0.png"] + filler, "one": ["/img/3.png", "/img/1.png"] + filler[1:], "two": cosine["two"]}
    report = evaluate(ScriptedSearcher(paths, cosine, reranked), captions, shortlist=11)
    assert report.captions == 3 and report.skipped_captions == 1
    assert report.shortlist_recall == {1: 0.0, 5: 1 / 3, 10: 2 / 3}
    assert report.reranked_recall == {1: 1 / 3, 5: 2 / 3, 10: 2 / 3}
    assert [f["caption"] for f in report.failures] == ["one", "two"]
    assert report.failures[0]["winner"] == "/img/3.png" and report.failures[1]["rank"] is None


def test_caption_formats(tmp_path):
    (tmp_path / "imgs").mkdir()
    expected = [
        Caption(str(tmp_path / "imgs" / "a.png"), "a red circle"),
        Caption(str(tmp_path / "imgs" / "b.png"), 'two, quoted "squares"'),
    ]
    (tmp_path / "c.csv").write_text('file,caption\nimgs/a.png,a red circle\nimgs/b.png,"two, quoted ""squares"""\n')
    (tmp_path / "c.jsonl").write_text(
        "\n".join(json.dumps({"file": f"imgs/{n}.png", "caption": c.text}) for n, c in zip("ab", expected))
    )
    karpathy = {
        "images": [
            {"filepath": "imgs", "filename": "a.png", "split": "test", "sentences": [{"raw": "a red circle"}]},
            {"filepath": "imgs", "filename": "b.png", "split": "test", "sentences": [{"raw": expected[1].text}]},
            {"filepath": "imgs", "filename": "c.png", "split": "train", "sentences": [{"raw": "train only"}]},
        ]
    }
    (tmp_path / "k.json").write_text(json.dumps(karpathy))
    for name in ("c.csv", "c.jsonl", "k.json"):
        assert read_captions(tmp_path / name) == expected, name
    other_root = read_captions(tmp_path / "c.csv", images_root="/data")
    assert other_root[0].path == "/data/imgs/a.png"
    (tmp_path / "bad.csv").write_text("name,text\nx,y\n")
    with pytest.raises(UsageError, match="file,caption"):
        read_captions(tmp_path / "bad.csv")


class BlendSearcher(ScriptedSearcher):
    """Reranked hits whose cosine (similarity) disagrees with ITM, so `blend` reorders them."""

    def __init__(self, paths, ranking, similarity):
        super().__init__(paths, ranking, ranking)
        self.similarity = similarity

    def search(self, queries, *, top_k, shortlist, rerank, score=None):
        # the ITM row and the blend evaluate derives from it both need ITM scores, whatever the default score
        assert not rerank or score == "itm"
        return [
            [
                Hit(q, r + 1, p, 0.9 - r / 10, self.similarity[p], r + 1)
                for r, p in enumerate(self.rankings[rerank][q][:top_k])
            ]
            for q in queries
        ]


def test_blended_recall_reorders_by_itm_plus_cosine():
    paths = ["/img/0.png", "/img/1.png", "/img/2.png"]
    # ITM 0.9, 0.8, 0.7 in this order; cosines move /img/0 from rank 2 (ITM) to rank 1 (0.8+0.3 > 0.9+0.1).
    ranking = {"zero": ["/img/1.png", "/img/0.png", "/img/2.png"]}
    similarity = {"/img/1.png": 0.1, "/img/0.png": 0.3, "/img/2.png": 0.35}
    report = evaluate(BlendSearcher(paths, ranking, similarity), [Caption("/img/0.png", "zero")], shortlist=3)
    assert report.reranked_recall[1] == 0.0
    assert report.blended_recall == {1: 1.0, 5: 1.0, 10: 1.0}
    assert report.as_dict()["blended_recall"]["R@1"] == 1.0


def test_held_out_spreads_over_the_images_and_takes_every_image_of_a_held_caption():
    captions = [Caption(f"/img/{i}.png", f"caption {i}") for i in range(6)] + [Caption("/img/9.png", "caption 0")]
    # 7 images sorted: 0..5, 9; count 2 -> positions 0 and 3 -> /img/0.png, /img/3.png; /img/9.png shares "caption 0"
    assert held_out(captions, 2) == {"/img/0.png", "/img/3.png", "/img/9.png"}
    with pytest.raises(UsageError, match="`absent` must be from 1 to 6"):
        held_out(captions, 7)


def test_abstention_levels_by_hand():
    table = abstention_levels([0.1, 0.5, None, 0.7], [0.9, 0.4, 0.6], [0.9, None, 0.3], levels=(0.3, 0.6))
    assert table == [
        {"min_match": 0.3, "absent_refused": 2 / 4, "present_answered": 3 / 3, "present_found": 2 / 3},
        {"min_match": 0.6, "absent_refused": 3 / 4, "present_answered": 2 / 3, "present_found": 1 / 3},
    ]


def test_evaluate_absent_holds_images_out_of_the_search_and_counts_by_hand():
    paths = [f"/img/{i}.png" for i in range(4)]
    captions = [Caption(p, f"caption {i}") for i, p in enumerate(paths)]
    itm = {  # each caption's ITM against each image
        "caption 0": {"/img/0.png": 0.9, "/img/1.png": 0.2, "/img/2.png": 0.3, "/img/3.png": 0.1},
        "caption 1": {"/img/0.png": 0.4, "/img/1.png": 0.1, "/img/2.png": 0.2, "/img/3.png": 0.8},
        "caption 2": {"/img/0.png": 0.5, "/img/1.png": 0.6, "/img/2.png": 0.7, "/img/3.png": 0.2},
        "caption 3": {"/img/0.png": 0.1, "/img/1.png": 0.3, "/img/2.png": 0.2, "/img/3.png": 0.95},
    }

    class HoldingOut:
        engine = type("Engine", (), {"device": type("Device", (), {"type": "cpu"})()})()
        reader = type("Reader", (), {"indexed_paths": lambda _, wanted: set(wanted) & set(paths)})()

        def search(self, queries, *, top_k, shortlist, rerank, score, where):
            import pyarrow as pa

            kept = pa.table({"path": paths}).filter(where).column("path").to_pylist()  # the expression, applied
            return [
                [
                    Hit(q, r + 1, p, itm[q][p], 0.5, r + 1, itm=itm[q][p])
                    for r, p in enumerate(sorted(kept, key=lambda p: -itm[q][p]))
                ][:top_k]
                for q in queries
            ]

    report = evaluate_absent(HoldingOut(), captions, absent=2, shortlist=4, levels=(0.5, 0.75))
    # held out: positions 0 and 2 -> /img/0.png, /img/2.png. Absent captions 0 and 2 see only images 1 and 3:
    # best ITM 0.2 and 0.6. Present captions 1 and 3: best 0.8 (image 3) and 0.95 (own image 3); own ITMs 0.1, 0.95.
    assert (report.absent_images, report.absent_queries, report.present_queries) == (2, 2, 2)
    assert report.levels == [
        {"min_match": 0.5, "absent_refused": 1 / 2, "present_answered": 1.0, "present_found": 1 / 2},
        {"min_match": 0.75, "absent_refused": 1.0, "present_answered": 1.0, "present_found": 1 / 2},
    ]
