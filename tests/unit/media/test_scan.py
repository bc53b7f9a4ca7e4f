"""scan(): what it yields, in which order, and how it survives hostile trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bt_search.errors import UsageError
from bt_search.media.scan import IMAGE_EXTENSIONS, FileRecord, ScanProblem, scan


def touch(path: Path, data: bytes = b"img") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def record(path: Path) -> FileRecord:
    st = os.stat(path)
    return FileRecord(str(path), st.st_size, st.st_mtime_ns)


def records(items) -> list[str]:
    return [item.path for item in items if isinstance(item, FileRecord)]


def problems(items) -> list[ScanProblem]:
    return [item for item in items if isinstance(item, ScanProblem)]


def test_nested_tree_in_sorted_order_with_exact_records(tmp_path):
    files = [tmp_path / name for name in ("b.jpg", "a/z.png", "a/deep/er/x.webp", "c/y.gif", "a.jpeg")]
    for i, path in enumerate(files):
        touch(path, b"x" * (i + 1))
    touch(tmp_path / "notes.txt")
    touch(tmp_path / "a" / "README")

    items = list(scan([tmp_path]))

    # Files of a directory first (sorted), then its subdirectories (sorted), depth first.
    expected_order = ["a.jpeg", "b.jpg", "a/z.png", "a/deep/er/x.webp", "c/y.gif"]
    assert items == [record(tmp_path / name) for name in expected_order]
    assert items == list(scan([tmp_path]))  # deterministic


def test_extensions_match_case_insensitively(tmp_path):
    for name in ("A.JPG", "b.Png", "c.JpEg", "d.TIFF", "e.txt", "f", "g.jpg.bak", ".jpg"):
        touch(tmp_path / name)
    assert records(scan([tmp_path])) == [str(tmp_path / name) for name in ("A.JPG", "b.Png", "c.JpEg", "d.TIFF")]
    assert {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


def test_symlink_loop_to_parent_terminates_and_yields_each_path_once(tmp_path):
    touch(tmp_path / "top.jpg")
    touch(tmp_path / "sub" / "inner.jpg")
    os.symlink("..", tmp_path / "sub" / "loop")
    os.symlink(".", tmp_path / "self")

    paths = records(scan([tmp_path]))

    assert paths == [str(tmp_path / "top.jpg"), str(tmp_path / "sub" / "inner.jpg")]


def test_symlinked_dirs_are_followed_and_real_paths_win(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    touch(root / "real" / "a.jpg")
    touch(outside / "b.jpg")
    os.symlink(root / "real", root / "0-alias")  # sorts before "real", yet files keep their real path
    os.symlink(outside, root / "linked")

    paths = records(scan([root]))

    assert paths == [str(root / "real" / "a.jpg"), str(outside / "b.jpg")]  # a linked folder's files: real folder path


def test_symlinked_file_is_yielded_under_its_own_path_with_target_stats(tmp_path):
    target = touch(tmp_path / "data" / "photo.bin", b"12345")
    os.symlink(target, tmp_path / "photo.jpg")

    items = list(scan([tmp_path]))

    assert items == [FileRecord(str(tmp_path / "photo.jpg"), 5, os.stat(target).st_mtime_ns)]


def test_dangling_symlinks_are_reported_not_fatal(tmp_path):
    os.symlink(tmp_path / "missing.jpg", tmp_path / "broken.jpg")
    os.symlink(tmp_path / "missing", tmp_path / "lock")  # not an image name: nothing to report
    os.symlink("loop.png", tmp_path / "loop.png")
    touch(tmp_path / "ok.jpg")

    items = list(scan([tmp_path]))

    assert items == [
        ScanProblem(str(tmp_path / "broken.jpg"), "dangling symlink"),
        ScanProblem(str(tmp_path / "loop.png"), "symlink loop"),
        record(tmp_path / "ok.jpg"),
    ]


@pytest.fixture
def unreadable(monkeypatch):
    """Make directories/files unreadable: chmod where it works, a patched OS call when we run as root."""
    as_root = os.geteuid() == 0
    denied_dirs: set[str] = set()
    denied_files: set[str] = set()
    real_scandir, real_access = os.scandir, os.access

    def scandir(path=".", *args):
        if os.fspath(path) in denied_dirs:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path, *args)

    def access(path, mode, *args, **kwargs):
        return os.fspath(path) not in denied_files and real_access(path, mode, *args, **kwargs)

    if as_root:
        monkeypatch.setattr(os, "scandir", scandir)
        monkeypatch.setattr(os, "access", access)

    def deny(path: Path) -> None:
        (denied_dirs if path.is_dir() else denied_files).add(str(path))
        if not as_root:
            mode = os.stat(path).st_mode
            os.chmod(path, 0)
            restores.append((path, mode))

    restores: list[tuple[Path, int]] = []
    yield deny
    for path, mode in restores:
        os.chmod(path, mode)


def test_unreadable_directory_is_reported_and_siblings_still_scanned(tmp_path, unreadable):
    touch(tmp_path / "a" / "one.jpg")
    touch(tmp_path / "locked" / "secret.jpg")
    touch(tmp_path / "z" / "two.jpg")
    unreadable(tmp_path / "locked")

    items = list(scan([tmp_path]))

    assert items == [
        record(tmp_path / "a" / "one.jpg"),
        ScanProblem(str(tmp_path / "locked"), "permission denied (directory)"),
        record(tmp_path / "z" / "two.jpg"),
    ]


def test_unreadable_file_is_reported(tmp_path, unreadable):
    touch(tmp_path / "a.jpg")
    unreadable(touch(tmp_path / "b.jpg"))

    items = list(scan([tmp_path]))

    assert items == [record(tmp_path / "a.jpg"), ScanProblem(str(tmp_path / "b.jpg"), "permission denied (file)")]


def test_special_files_with_image_names_are_not_yielded(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would block the decoder forever

    assert list(scan([tmp_path])) == [ScanProblem(str(tmp_path / "pipe.jpg"), "not a regular file")]


def test_awkward_names_work(tmp_path):
    names = ["with space.jpg", "ünïcødé 写真.png", "new\nline.jpg", "-dash.jpg", "quote'\".gif"]
    for name in names:
        touch(tmp_path / "dir with space" / name)

    assert records(scan([tmp_path])) == [str(tmp_path / "dir with space" / name) for name in sorted(names)]


def test_names_that_are_not_utf8_are_listed_with_their_bytes(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"bad\xff.jpg")
    with open(raw, "wb") as handle:
        handle.write(b"x")

    (item,) = list(scan([tmp_path]))

    assert isinstance(item, FileRecord)  # the index stores such names losslessly (store/stored_paths.py)
    assert os.fsencode(item.path) == raw


def test_skip_directories_by_path_and_through_symlinks(tmp_path):
    touch(tmp_path / "keep.jpg")
    touch(tmp_path / "index" / "thumb.jpg")
    os.symlink(tmp_path / "index", tmp_path / "index-link")

    assert records(scan([tmp_path], skip=[tmp_path / "index"])) == [str(tmp_path / "keep.jpg")]
    assert len(records(scan([tmp_path]))) == 2  # the skip is what kept it out


def test_missing_root_raises_usage_error_before_anything_is_yielded(tmp_path):
    touch(tmp_path / "a.jpg")
    missing = tmp_path / "nope"

    with pytest.raises(UsageError, match="nope"):
        scan([tmp_path, missing])  # eager: no partial scan of the good root first
    os.symlink(missing, tmp_path / "dangling-root")
    with pytest.raises(UsageError, match="dangling"):
        scan([tmp_path / "dangling-root"])


def test_file_roots_and_overlapping_roots_never_repeat_a_path(tmp_path):
    photo = touch(tmp_path / "sub" / "photo.jpg")
    notes = touch(tmp_path / "notes.txt")

    items = list(scan([photo, tmp_path, tmp_path / "sub", photo, notes]))

    assert records(items) == [str(photo)]
    assert problems(items) == [ScanProblem(str(notes), "not an image file name (unknown extension)")]


def test_relative_roots_give_absolute_paths(tmp_path, monkeypatch):
    touch(tmp_path / "pics" / "a.jpg")
    monkeypatch.chdir(tmp_path)

    assert records(scan(["pics"])) == [str(tmp_path / "pics" / "a.jpg")]
