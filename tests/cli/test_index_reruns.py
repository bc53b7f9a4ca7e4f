"""`bt-search index` re-runs: a file that cannot be read this time keeps its row, --prune removes only what is
really gone, and a file reached under two folder names is one row."""

from __future__ import annotations

import errno
import os
import shutil

from bt_search.store import IndexReader
from tests.support.cli import cli, cli_index, indexed_paths
from tests.support.images import write_pngs


def test_an_indexed_file_that_cannot_be_read_keeps_its_row(tiny_checkpoint, tmp_path):
    ext, lib = tmp_path / "ext", tmp_path / "lib"
    write_pngs(ext, ["a.png", "b.png"])
    write_pngs(lib, ["own.png"], seed=5)
    for name in ("a.png", "b.png"):
        (lib / name).symlink_to(ext / name)
    cli_index([lib], tmp_path / "index", tiny_checkpoint)
    before = indexed_paths(tmp_path / "index")
    assert len(before) == 3

    ext.rename(tmp_path / "ext.unmounted")  # the drive is gone: the links dangle
    unmounted = cli_index([lib], tmp_path / "index", tiny_checkpoint)
    assert indexed_paths(tmp_path / "index") == before
    assert not {row.path for row in IndexReader.open(tmp_path / "index").failed()} & set(before)
    assert "2 indexed file(s) could not be read this run" in unmounted.stderr

    (tmp_path / "ext.unmounted").rename(ext)  # back: nothing is embedded again
    remounted = cli_index([lib], tmp_path / "index", tiny_checkpoint)
    assert "0 indexed, 3 unchanged" in remounted.stderr


def test_prune_keeps_files_under_a_folder_it_could_not_list(tiny_checkpoint, tmp_path, monkeypatch):
    root = tmp_path / "pr"
    write_pngs(root, ["top.png"])
    locked = write_pngs(root / "sub", ["x.png", "y.png"], seed=1)
    deleted = write_pngs(root / "gone", ["z.png"], seed=3)
    cli_index([root], tmp_path / "index", tiny_checkpoint)
    shutil.rmtree(root / "gone")  # a folder that is really gone: its rows go

    real_scandir = os.scandir

    def denied(path="."):  # chmod 000 (tests may run as root, which chmod does not stop)
        if os.path.realpath(path) == os.path.realpath(root / "sub"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    result = cli_index([root], tmp_path / "index", tiny_checkpoint, "--prune")
    assert "1 removed" in result.stderr
    assert indexed_paths(tmp_path / "index") == sorted(str(p) for p in [root / "top.png", *locked])
    assert str(deleted[0]) not in indexed_paths(tmp_path / "index")


def test_prune_survives_indexed_files_turned_into_scan_problems(tiny_checkpoint, tmp_path):
    photos = write_pngs(tmp_path / "photos", ["a.png", "b.png", "c.png", "d.png"])
    cli_index([tmp_path / "photos"], tmp_path / "index", tiny_checkpoint)
    photos[0].unlink()
    photos[0].symlink_to(tmp_path / "nowhere.png")  # dangling symlink
    photos[1].unlink()
    os.mkfifo(photos[1])  # a FIFO would hang a decoder
    photos[2].unlink()  # really gone
    for _ in range(2):  # "on every re-run"
        result = cli_index([tmp_path / "photos"], tmp_path / "index", tiny_checkpoint, "--prune")
        assert "internal error" not in result.stderr
    assert indexed_paths(tmp_path / "index") == sorted(str(p) for p in [photos[0], photos[1], photos[3]])


def test_one_file_is_one_row_whatever_folder_name_reaches_it(small_index, tiny_checkpoint, tmp_path):
    photos_dir = small_index[1][0].parent
    link = tmp_path / "imgslink"
    link.symlink_to(photos_dir)
    copy = tmp_path / "index"
    shutil.copytree(small_index[0], copy)
    cli_index([link], copy, tiny_checkpoint)  # the same folder under another name
    assert indexed_paths(copy) == sorted(str(p) for p in small_index[1])

    cli_index([link, photos_dir], tmp_path / "fresh", tiny_checkpoint)  # one run, both names
    assert indexed_paths(tmp_path / "fresh") == sorted(str(p) for p in small_index[1])

    under = cli(
        "query", "a red circle", "--index", small_index[0], "--under", link, "--no-rerank", "-f", "paths", "--no-fold"
    )
    assert under.exit_code == 0, under.stderr
    assert sorted(under.stdout.splitlines()) == sorted(str(p) for p in small_index[1])
