"""The folders an index follows: every folder a run was given, recorded in the manifest (`settings["roots"]`),
so `serve --watch` knows what to watch without being told again."""

from __future__ import annotations

import os
from collections.abc import Iterable

ROOTS_SETTING = "roots"


def merged_roots(recorded: Iterable[str], given: Iterable[str]) -> list[str]:
    """`recorded` with the folders in `given` added, sorted: a folder inside another one is left out (the outer
    one covers it), and a recorded folder inside a newly given one gives way to it."""
    kept: list[str] = []
    for folder in sorted(set(recorded) | set(given), key=lambda path: (len(path), path)):
        if not any(_inside(folder, outer) for outer in kept):
            kept.append(folder)
    return sorted(kept)


def recorded_roots(settings: dict) -> list[str]:
    """The folders recorded in an index's manifest settings (none for an index built before they were)."""
    return [str(path) for path in settings.get(ROOTS_SETTING) or ()]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(os.path.join(folder, ""))
