"""Indexed files a search finds gone: the reason each is given, and one line for many of them.

Standard library only: the CLI prints this on the light path through a server too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

MISSING_REASON = "no longer exists (moved or deleted since indexing)"


def missing_summary(paths: Sequence[str]) -> str:
    """One line for many files a search found gone: how many, and the folder they all lie in (a drive that
    is not mounted, a folder moved), with what to do about it."""
    folder = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    where = f"all under {folder}" if folder not in ("", os.sep) else "in several folders"
    return (
        f"{len(paths)} files of the nearest candidates no longer exist, {where}: if a drive is not mounted, "
        "mount it; if they moved, index their new folder and drop the old rows with `bt-search index FOLDER "
        "--prune`"
    )
