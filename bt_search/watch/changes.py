"""What a batch of file-system changes asks of the index: which folders to list again, which to walk whole.

A change costs what changed: the folder holding a changed path is listed again without its subfolders (its
new and changed images are embedded, and with prune what it no longer holds is pruned, whole subfolders
included), and only a folder that was added (made, moved or copied in) is walked whole. Paths outside the
watched roots, inside the index itself, or left out by the scan rules (hidden names, excludes) cost nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bt_search.media.scan_rules import ScanRules

ADDED, MODIFIED, DELETED = "added", "modified", "deleted"


@dataclass(frozen=True)
class Targets:
    """The work of one batch: `folders` listed without their subfolders, `trees` walked whole."""

    folders: tuple[str, ...] = ()
    trees: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.folders or self.trees)


def targets(
    changes: Iterable[tuple[str, str]], roots: Sequence[str], rules: ScanRules, skip: Sequence[str] = ()
) -> Targets:
    """The folders to list and the trees to walk for `changes` ((kind, path): kind ADDED, MODIFIED or DELETED)
    under the watched `roots` (absolute), leaving out `skip` (the index directory) and what `rules` leave out.
    Reads only whether each changed path is a folder now, and which of its parents still exist."""
    folders: set[str] = set()
    trees: set[str] = set()
    for kind, path in changes:
        path = os.path.abspath(path)
        root = _root_of(path, roots)
        if root is None or any(_inside(path, place) for place in skip) or rules.covers(path, [root]):
            continue
        if os.path.isdir(path):
            if path == root or kind != ADDED:
                folders.add(path)  # its own entries changed (or its metadata): list it again
            else:
                trees.add(path)  # a folder made, moved or copied in: everything under it is new
            if path != root:
                folders.add(_nearest_folder(os.path.dirname(path), root))
        elif path != root:  # a file added, changed or gone, or a folder gone: its folder says which
            folders.add(_nearest_folder(os.path.dirname(path), root))
    trees = {tree for tree in trees if not any(tree != other and _inside(tree, other) for other in trees)}
    folders = {folder for folder in folders if not any(_inside(folder, tree) for tree in trees)}
    return Targets(tuple(sorted(folders)), tuple(sorted(trees)))


def _root_of(path: str, roots: Sequence[str]) -> str | None:
    """The innermost watched root holding `path` (None: outside them all)."""
    holding = [root for root in roots if _inside(path, root)]
    return max(holding, key=len) if holding else None


def _nearest_folder(folder: str, root: str) -> str:
    """`folder`, or its nearest parent that still exists, not above `root` (a whole tree may be gone)."""
    while folder != root and not os.path.isdir(folder) and _inside(folder, root):
        folder = os.path.dirname(folder)
    return folder


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(os.path.join(folder, ""))
