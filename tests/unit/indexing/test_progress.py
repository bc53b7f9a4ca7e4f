"""`index_paths(..., progress=True)`: a tqdm.auto bar for notebook users, counting every decoded file."""

from __future__ import annotations

from bt_search.engine.loading import load_engine
from bt_search.indexing.run import index_paths
from bt_search.store import IndexIdentity, IndexWriter
from tests.support.images import noise_image


def test_progress_true_draws_a_tqdm_bar_to_completion(tiny_checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        noise_image(i, 40, 40).save(photos / f"{i}.png")
    (photos / "bad.png").write_bytes(b"not a png")
    engine = load_engine(str(tiny_checkpoint), device="cpu")
    with IndexWriter.open(tmp_path / "index", IndexIdentity.of(engine)) as writer:
        report = index_paths([str(photos)], writer, engine, workers=0, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert report.indexed == 5
    assert "indexing" in err and "6/6" in err  # five embedded, one failure: every file counted
    assert f"skipped {str(photos / 'bad.png')!r}" in err
