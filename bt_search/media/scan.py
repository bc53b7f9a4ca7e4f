"""Walk folders safely and yield one record per candidate image file.

Only names are judged here (by extension); the decoder confirms the content later. Problems that
stop a would-be image from being indexed (dangling symlink, unreadable directory, ...) are yielded
as `ScanProblem`s in the stream instead of raised, so one bad corner never stops a scan.

Paths are canonical (`canonical_path`): a file's folder part is its real path, so one file has one
name whatever folder name (a symlink, `imgs` vs `imgslink`) reached it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bt_search.errors import UsageError
from bt_search.media.scan_rules import ScanRules
from bt_search.media.video_reading import VIDEO_EXTENSIONS

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".mpo",
        ".png",
        ".apng",
        ".webp",
        ".gif",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tga",
        ".avif",
        ".heic",
        ".heif",
        ".hif",
    }
)
# camera RAW photos, decoded through rawpy, the `[raw]` extra (media/raw.py)
RAW_EXTENSIONS: frozenset[str] = frozenset({".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"})
IMAGE_EXTENSIONS |= RAW_EXTENSIONS

DirId = tuple[int, int]  # (st_dev, st_ino): what makes a directory the same one through any path


@dataclass(frozen=True)
class FileRecord:
    path: str  # canonical: the folder's real path (symlinks resolved) + the file's own name
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanProblem:
    path: str
    reason: str  # short and human, e.g. "dangling symlink"


ScanItem = FileRecord | ScanProblem


def has_image_extension(name: str) -> bool:
    """Whether the scan picks the file up: an image, or a video (media/video.py)."""
    extension = os.path.splitext(name)[1].lower()
    return extension in IMAGE_EXTENSIONS or extension in VIDEO_EXTENSIONS


Listing = dict[str, frozenset[str]]  # directory -> the names it held when it was listed


def canonical_path(path: str | os.PathLike[str]) -> str:
    """The one name the index uses for `path`: a folder's real path, or a file's name in its folder's real path.

    The file's own name is kept (a symlink to a photo stays an entry of its own), but every folder
    on the way is resolved, so `imgs/a.jpg` and `imgslink/a.jpg` are the same file.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        return os.path.realpath(path)
    folder, name = os.path.split(path)
    return os.path.join(os.path.realpath(folder), name)


def scan(
    roots: Iterable[str | os.PathLike[str]],
    skip: Iterable[str | os.PathLike[str]] = (),
    listed: Listing | None = None,
    rules: ScanRules = ScanRules(),
    folders: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[ScanItem]:
    """Yield the image files under `roots` (recursively), in a deterministic order, under canonical paths.

    A root that is a file is taken as is. Symlinked directories are followed, but each real
    directory is listed once (no loops); files in them get their real folder path. Directories in
    `skip` (e.g. the index itself) are not entered. When `listed` is given, every directory listed is
    recorded there with the names it held: what was positively seen, as opposed to a folder that
    could not be read. Entries `rules` leave out (hidden names, excludes) are neither yielded nor
    reported; roots are taken as given. Raises UsageError, before yielding anything, when a root does not exist.

    `folders` are listed without descending into their subfolders (a watcher's changed folders: the cost of a
    change is one listing), after the roots; one that a root's walk listed already is not listed again, one
    that is gone is passed over.
    """
    root_paths = [_checked_root(root) for root in roots]
    folder_paths = [canonical_path(folder) for folder in folders]  # one gone meanwhile is skipped
    skip_paths = [canonical_path(s) for s in skip]
    listed = {} if listed is None else listed
    return _walk_roots(root_paths, skip=skip_paths, listed=listed, rules=rules, folders=folder_paths)


def _checked_root(root: str | os.PathLike[str]) -> str:
    path = os.path.abspath(os.fspath(root))
    if not os.path.exists(path):
        raise UsageError(f"{os.fspath(root)} {_missing_reason(path)}; give an existing folder or image file")
    return canonical_path(path)


def split_missing(entries: Iterable[str]) -> tuple[list[str], list[ScanProblem]]:
    """Entries of a source list that exist, and a problem (canonical path, reason) for each that does not:
    a list may name files gone since it was written, and one of them must not stop the run as a root does."""
    present, missing = [], []
    for entry in entries:
        path = os.path.abspath(entry)
        if os.path.exists(path):
            present.append(entry)
        else:
            missing.append(ScanProblem(canonical_path(path), f"listed, but {_missing_reason(path)}"))
    return present, missing


def _missing_reason(path: str) -> str:
    return "is a dangling symlink" if os.path.lexists(path) else "does not exist"


def _walk_roots(
    roots: list[str], skip: list[str], listed: Listing, rules: ScanRules, folders: list[str] = ()
) -> Iterator[ScanItem]:
    file_roots = {root for root in roots if not os.path.isdir(root)}
    walk = _TreeWalk(skip_paths=set(skip), skip_ids=_dir_ids(skip), file_roots=file_roots, listed=listed, rules=rules)
    yielded_file_roots: set[str] = set()
    for root in roots:
        if root not in file_roots:
            yield from walk.tree(root)
        elif root not in yielded_file_roots:
            yielded_file_roots.add(root)
            yield _file_root_item(root)
    yield from walk.deferred_symlinked_dirs()
    for folder in folders:
        if os.path.isdir(folder):
            yield from walk.folder(folder)


def _dir_ids(paths: Iterable[str]) -> set[DirId]:
    ids = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue  # a skip dir that does not exist cannot be walked into by identity
        if stat.S_ISDIR(st.st_mode):
            ids.add((st.st_dev, st.st_ino))
    return ids


def _file_root_item(path: str) -> ScanItem:
    if not has_image_extension(path):
        return ScanProblem(path, "not an image file name (unknown extension)")
    try:
        return _checked_file(path, os.stat(path))
    except OSError as exc:
        return ScanProblem(path, _os_error_reason(exc, "file"))


class _TreeWalk:
    """Walk state shared by all roots, so a directory reached again (from any root) is not re-listed."""

    def __init__(
        self, skip_paths: set[str], skip_ids: set[DirId], file_roots: set[str], listed: Listing, rules: ScanRules
    ):
        self._skip_paths = skip_paths
        self._listed = listed
        self._visited: set[DirId] = set(skip_ids)  # skip dirs count as already seen
        self._file_roots = file_roots  # yielded as roots; never again from a walk
        self._symlinked_dirs: deque[str] = deque()
        self._rules = rules

    def tree(self, top: str) -> Iterator[ScanItem]:
        stack = [top]
        while stack:
            directory = stack.pop()
            subdirs: list[str] = []
            yield from self._directory(directory, subdirs)
            stack.extend(reversed(subdirs))  # reversed: popped in sorted order

    def folder(self, directory: str) -> Iterator[ScanItem]:
        """The image files directly in `directory`; its subfolders are not entered."""
        yield from self._directory(directory, subdirs=None)

    def deferred_symlinked_dirs(self) -> Iterator[ScanItem]:
        while self._symlinked_dirs:  # walking one may defer more
            yield from self.tree(os.path.realpath(self._symlinked_dirs.popleft()))

    def _directory(self, directory: str, subdirs: list[str] | None) -> Iterator[ScanItem]:
        """Yield the image files directly in `directory`; append its real subdirectories to `subdirs` (None:
        neither they nor its symlinked folders are entered)."""
        if directory in self._skip_paths:
            return
        try:
            if not self._first_visit(directory):
                return
            entries = _sorted_entries(directory)
        except FileNotFoundError:
            return  # vanished since its parent was listed
        except OSError as exc:
            yield ScanProblem(directory, _os_error_reason(exc, "directory"))
            return
        self._listed[directory] = frozenset(entry.name for entry in entries)
        for entry in entries:
            if self._rules.skips(entry.path, entry.name, is_dir=_is_real_dir(entry) or _is_symlinked_dir(entry)):
                continue
            if _is_real_dir(entry):
                if subdirs is not None:
                    subdirs.append(entry.path)
            elif _is_symlinked_dir(entry):
                if subdirs is not None:
                    self._symlinked_dirs.append(entry.path)
            elif has_image_extension(entry.name) and entry.path not in self._file_roots:
                yield _entry_item(entry)

    def _first_visit(self, directory: str) -> bool:
        st = os.stat(directory)
        dir_id = (st.st_dev, st.st_ino)
        if dir_id in self._visited:
            return False
        self._visited.add(dir_id)
        return True


def _sorted_entries(directory: str) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as it:
        return sorted(it, key=lambda entry: entry.name)


def _is_real_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_symlinked_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink() and entry.is_dir()
    except OSError:
        return False


def _entry_item(entry: os.DirEntry[str]) -> ScanItem:
    try:
        st = entry.stat()  # follows symlinks: a link to an image is indexed under the link's path
    except FileNotFoundError:
        return ScanProblem(entry.path, "dangling symlink" if entry.is_symlink() else "vanished during scan")
    except OSError as exc:
        return ScanProblem(entry.path, _os_error_reason(exc, "file"))
    return _checked_file(entry.path, st)


def _checked_file(path: str, st: os.stat_result) -> ScanItem:
    if not stat.S_ISREG(st.st_mode):
        return ScanProblem(path, "not a regular file")  # a FIFO named x.jpg would hang the decoder
    if not os.access(path, os.R_OK):
        return ScanProblem(path, "permission denied (file)")
    return FileRecord(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _os_error_reason(exc: OSError, what: str) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({what})"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return f"cannot read {what}: {exc.strerror or exc}"
