"""Watch mode: changes under a watched folder reach the index through the indexer, batch by batch, under its
rules and its lock; a kill -9 in the middle of a batch loses nothing committed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bt_search.indexing.run import index_paths
from bt_search.media.scan_rules import ScanRules
from bt_search.search.searcher import Searcher
from bt_search.store import IndexIdentity, IndexReader, IndexWriter
from bt_search.watch.changes import ADDED, DELETED, MODIFIED, Targets, targets
from bt_search.watch.filesystems import filesystem_type, mount_types
from tests.support.images import noise_image, write_pngs
from tests.support.watching import WatcherThread, paths_of, wait_for


def _index(engine, photos, index):
    with IndexWriter.open(index, IndexIdentity.of(engine)) as writer:
        return index_paths([str(photos)], writer, engine, workers=0, batch_size=4)


def _top_hit(index, engine, path) -> str:
    """The best hit of an image search for the file at `path`, embedded afresh."""
    return Searcher(IndexReader.open(index), engine).similar_images(str(path), top_k=1)[0].path


# ---------------------------------------------------------------- what a change costs


def test_a_change_lists_its_folder_and_only_an_added_folder_is_walked(tmp_path):
    root = tmp_path / "photos"
    (root / "2024" / "trip").mkdir(parents=True)
    (root / "new" / "deep").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    r = str(root)
    changes = {
        (ADDED, f"{r}/2024/a.jpg"),  # a file: its folder is listed again, not walked
        (MODIFIED, f"{r}/2024/trip/b.jpg"),
        (ADDED, f"{r}/new"),  # a folder moved in: walked whole (what is inside it is covered)
        (ADDED, f"{r}/new/deep/c.jpg"),
        (DELETED, f"{r}/gone/deeper/d.jpg"),  # a whole tree gone: the nearest folder left is listed
        (ADDED, f"{r}/.thumbnails/e.jpg"),  # hidden: nothing
        (ADDED, f"{r}/skipme/f.jpg"),  # excluded: nothing
        (ADDED, f"{tmp_path}/elsewhere/g.jpg"),  # outside the roots: nothing
        (ADDED, f"{r}/index/manifest.json"),  # the index itself: nothing
    }
    rules = ScanRules(exclude=("*/skipme/*",))
    work = targets(changes, [r], rules, skip=[f"{r}/index"])
    assert work == Targets(folders=(r, f"{r}/2024", f"{r}/2024/trip"), trees=(f"{r}/new",))
    assert not targets({(ADDED, f"{r}/.hidden.jpg")}, [r], rules)


def test_a_listed_folder_yields_its_own_files_only(tmp_path):
    from bt_search.media.scan import FileRecord, scan

    write_pngs(tmp_path / "top", ["a.png"])
    write_pngs(tmp_path / "top" / "sub", ["b.png"])
    listed = {}
    found = [item.path for item in scan([], listed=listed, folders=[tmp_path / "top", tmp_path / "gone"])]
    assert found == [str(tmp_path / "top" / "a.png")] and isinstance(
        next(scan([], folders=[tmp_path / "top"])), FileRecord
    )
    assert listed == {str(tmp_path / "top"): frozenset({"a.png", "sub"})}  # what the prune rule reads


def test_indexes_record_the_outermost_folders_they_were_given():
    from bt_search.indexing.roots import merged_roots

    assert merged_roots([], ["/p/a", "/p/a/b", "/q"]) == ["/p/a", "/q"]
    assert merged_roots(["/p/a/b", "/p/ab"], ["/p/a"]) == ["/p/a", "/p/ab"]


def test_network_mounts_are_told_from_local_ones():
    mountinfo = (
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /mnt/nas rw - nfs4 nas:/photos rw\n"
        "41 22 0:51 / /mnt/my\\040share rw - cifs //srv/share rw\n"
    )
    mounts = mount_types(mountinfo)
    assert filesystem_type("/home/me/photos", mounts) == "ext4"
    assert filesystem_type("/mnt/nas/2024/a.jpg", mounts) == "nfs4"
    assert filesystem_type("/mnt/my share", mounts) == "cifs"
    assert filesystem_type("/mnt/nasty", mounts) == "ext4"


# ---------------------------------------------------------------- the watcher, in this process


def test_dropped_files_become_findable_and_deleted_ones_disappear(tmp_path, engine):
    photos, index = tmp_path / "photos", tmp_path / "index"
    write_pngs(photos, ["kept.png", "old.png"])
    _index(engine, photos, index)
    with WatcherThread(index, [photos], engine) as watching:
        new = write_pngs(photos, ["new.png"], seed=10)[0]
        album = write_pngs(photos / "album", ["x.png", "y.png"], seed=20)  # a new folder, files in it
        write_pngs(photos / ".cache", ["hidden.png"], seed=30)  # hidden: never indexed
        want = {str(photos / "kept.png"), str(photos / "old.png"), str(new), *map(str, album)}
        wait_for(lambda: paths_of(index) == want, what="the new files in the index")
        assert _top_hit(index, engine, new) == str(new)
        assert _top_hit(index, engine, album[1]) == str(album[1])

        (photos / "old.png").unlink()
        shutil.rmtree(photos / "album")
        wait_for(lambda: paths_of(index) == {str(photos / "kept.png"), str(new)}, what="the deletions pruned")
        wait_for(lambda: watching.status.state.batches >= 2, what="the second batch to end")  # rows land first
        assert not watching.status.state.error


def test_a_manual_index_run_holds_the_lock_and_the_watcher_waits(tmp_path, engine):
    photos, index = tmp_path / "photos", tmp_path / "index"
    write_pngs(photos, ["a.png"])
    _index(engine, photos, index)
    with WatcherThread(index, [photos], engine) as watching:
        with IndexWriter.open(index, IndexIdentity.of(engine)):  # what a running `bt-search index` holds
            write_pngs(photos, ["b.png"], seed=5)
            wait_for(lambda: "locked" in watching.status.state.waiting, what="the watcher to wait for the lock")
            assert paths_of(index) == {str(photos / "a.png")}
            assert any(line.startswith("waiting: index") for line in watching.said)
        wait_for(lambda: str(photos / "b.png") in paths_of(index), what="the file indexed once the lock is free")
        assert watching.status.state.waiting == ""


def test_a_failed_batch_is_tried_again_with_the_next_change(tmp_path, engine, monkeypatch):
    import errno

    from bt_search.watch import watcher as watcher_module

    photos, index = tmp_path / "photos", tmp_path / "index"
    write_pngs(photos, ["a.png"])
    _index(engine, photos, index)
    calls = []

    def disk_full_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return index_paths(*args, **kwargs)

    monkeypatch.setattr(watcher_module, "index_paths", disk_full_once)
    with WatcherThread(index, [photos], engine) as watching:
        write_pngs(photos / "one", ["b.png"], seed=4)
        wait_for(lambda: "No space left" in watching.status.state.error, what="the failed batch")
        write_pngs(photos / "two", ["c.png"], seed=5)
        want = {str(photos / "a.png"), str(photos / "one" / "b.png"), str(photos / "two" / "c.png")}
        wait_for(lambda: paths_of(index) == want, what="both changes indexed by the next batch")


def test_without_events_the_watcher_polls(tmp_path, engine, monkeypatch):
    import watchfiles._rust_notify as rust_notify

    real = rust_notify.RustNotify

    def events_unavailable(paths, debug, force_polling, *rest):
        if not force_polling:
            raise OSError(28, "inotify watch limit reached")
        return real(paths, debug, force_polling, *rest)

    monkeypatch.setattr(rust_notify, "RustNotify", events_unavailable)
    photos, index = tmp_path / "photos", tmp_path / "index"
    write_pngs(photos, ["a.png"])
    _index(engine, photos, index)
    with WatcherThread(index, [photos], engine) as watching:
        assert watching.status.state.mode == "polling every 60 s"
        assert any("file-system events are unavailable" in line for line in watching.said)


def test_polling_finds_changes_where_events_are_not_used(tmp_path, engine):
    photos, index = tmp_path / "photos", tmp_path / "index"
    write_pngs(photos, ["a.png"])
    _index(engine, photos, index)
    with WatcherThread(index, [photos], engine, poll=0.2) as watching:
        assert watching.status.state.mode == "polling every 0.2 s"
        write_pngs(photos, ["b.png"], seed=3)
        wait_for(lambda: str(photos / "b.png") in paths_of(index), what="the polled change")


# ---------------------------------------------------------------- kill -9 in the middle of a batch

SLOW_INDEX = """
import sys, time
from bt_search.engine.model import BridgeTowerEngine
encode = BridgeTowerEngine.encode_images
def slow(self, pixels):
    time.sleep(0.15)
    return encode(self, pixels)
BridgeTowerEngine.encode_images = slow
from bt_search.cli.app import app
app(sys.argv[1:])
"""


def test_kill_9_during_a_watched_batch_loses_nothing_committed(tmp_path, tiny_checkpoint, engine):
    photos, index = tmp_path / "photos", tmp_path / "index"
    write_pngs(photos, ["first.png"])
    args = ["index", str(photos), "--index", str(index), "--model", str(tiny_checkpoint), "--workers", "0"]
    args += ["--watch", "--batch-size", "1", "--commit-every", "1"]
    env = dict(os.environ, PYTHONPATH=os.getcwd(), PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, "-c", SLOW_INDEX, *args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (index / "manifest.json").exists() and len(paths_of(index)) == 1, 60, "the first run")
        time.sleep(0.3)  # lets the first run finish and the watch begin; changes made earlier are caught anyway
        dropped = write_pngs(photos / "burst", [f"{i:02}.png" for i in range(24)], seed=100)
        committed = wait_for(lambda: len(paths_of(index)) >= 4 and paths_of(index), 60, "commits of the batch")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert len(committed) < 1 + len(dropped), "the batch ended before the kill: the test proves nothing"
    reader = IndexReader.open(index)
    assert committed <= set(reader.paths)  # every row seen committed is there after the kill
    for path in sorted(committed - {str(photos / "first.png")})[:3]:
        assert _top_hit(index, engine, path) == path  # and searches as it did
    report = _index(engine, photos, index)  # the next run (or batch) does the rest, and only the rest
    assert paths_of(index) == {str(photos / "first.png"), *map(str, dropped)}
    assert report.indexed == 1 + len(dropped) - len(reader.paths)


# ---------------------------------------------------------------- the server


def test_serve_watch_answers_from_the_new_state_and_says_so(tmp_path, engine):
    import threading

    from bt_search.serve.page import render_page
    from bt_search.serve.watching import start_watching
    from tests.support.serve import build_index, service_for

    index = build_index(engine, tmp_path, "lib", [1, 2])
    photos = tmp_path / "lib-photos"
    service = service_for(index, engine)
    stop, said = threading.Event(), []
    watcher = start_watching(service, None, 4, said.append, stop)
    try:
        wait_for(lambda: service.watch_status.state.mode == "events", what="the watcher to start")
        wait_for(lambda: service.watch_status.state.batches >= 1, what="the catch-up")
        noise_image(7, 64, 64).save(photos / "new.png")
        new = str(photos / "new.png")
        wait_for(lambda: service.refresh() or service.health()["images"] == 3, what="the new image served")
        hits = service.similar(new, {"top_k": 1}).results[0]
        assert [hit.path for hit in hits] == [new]
        wait_for(lambda: service.watch_status.state.batches >= 2, what="the batch to end")  # its rows land first
        health = service.health()
        assert health["watch"]["roots"] == [str(photos)] and health["watch"]["last_batch"]["indexed"] == 1
    finally:
        stop.set()
    assert watcher.roots == [str(photos)]
    service.watch_status.update(indexing=12)  # what a running batch of 12 files sets
    page = render_page(index=service.page_facts())
    assert "indexing 12 new files" in page


def test_serve_watch_needs_an_index_that_records_its_folders(tmp_path, engine):
    import threading

    from bt_search.errors import UsageError
    from bt_search.serve.watching import start_watching
    from tests.support.serve import service_for

    photos, index = tmp_path / "photos", tmp_path / "index"
    write_pngs(photos, ["a.png"])
    _index(engine, photos, index)
    with IndexWriter.open(index, IndexIdentity.of(engine)) as writer:
        writer.record_settings(roots=[])  # as an index built before indexes recorded their folders
    with pytest.raises(UsageError, match="records no folders to watch"):
        start_watching(service_for(index, engine), None, 4, print, threading.Event())


def test_watch_options_are_checked_before_any_model_loads(tmp_path, monkeypatch):
    from tests.support.cli import cli

    write_pngs(tmp_path / "p", ["a.png"])
    result = cli("index", tmp_path / "p", "--index", tmp_path / "i", "--poll", "5")
    assert result.exit_code == 2 and "--poll sets how --watch watches" in result.stderr
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # not installed
    result = cli("index", tmp_path / "p", "--index", tmp_path / "i", "--watch")
    assert result.exit_code == 1 and "pip install 'bt-search[watch]'" in result.stderr
    assert not (tmp_path / "i").exists()
