"""Which files a scan leaves out: hidden/system names by default, plus the user's exclude globs.

Phone and NAS libraries are full of files that are not photos but look like them: `.thumbnails/` caches,
macOS AppleDouble `._IMG_0001.jpg` companions, Synology `@eaDir/` thumbnails. They are skipped by default
(`include_hidden` turns that off). Exclude globs use shell rules (fnmatch, `*` also crosses `/`) against the
absolute path; a directory is tested with a trailing `/` as well, so `*/node_modules/*` prunes the whole
folder without listing it. The rules are recorded in the index manifest, so re-runs apply the same ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

SYSTEM_DIR_NAMES = frozenset({"@eaDir"})  # Synology thumbnails; dot names (incl. AppleDouble `._*`) are hidden


@dataclass(frozen=True)
class ScanRules:
    include_hidden: bool = False
    exclude: tuple[str, ...] = ()

    def skips(self, path: str, name: str, is_dir: bool = False) -> bool:
        """Whether an entry found while walking (not a root given by the user) is left out."""
        if not self.include_hidden and is_hidden_name(name):
            return True
        return any(fnmatchcase(path, glob) or (is_dir and fnmatchcase(path + os.sep, glob)) for glob in self.exclude)

    def covers(self, path: str, roots: Iterable[str]) -> bool:
        """Whether these rules leave out `path` when walking from the root that holds it (for --prune)."""
        for root in roots:
            prefix = os.path.join(root, "")
            if path.startswith(prefix):
                parts = path[len(prefix) :].split(os.sep)
                if not self.include_hidden and any(is_hidden_name(part) for part in parts):
                    return True
                parents = [os.path.join(root, *parts[:i]) for i in range(1, len(parts))]
                return self.skips(path, parts[-1]) or any(self.skips(p, os.path.basename(p), True) for p in parents)
        return False

    def as_settings(self) -> dict[str, Any]:
        return {"include_hidden": self.include_hidden, "exclude": list(self.exclude)}

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> ScanRules:
        settings = settings or {}
        return cls(bool(settings.get("include_hidden", False)), tuple(settings.get("exclude", ())))


def is_hidden_name(name: str) -> bool:
    return name.startswith(".") or name in SYSTEM_DIR_NAMES


def resolved_rules(
    recorded: dict[str, Any] | None, include_hidden: bool | None = None, exclude: Sequence[str] | None = None
) -> ScanRules:
    """The rules a run applies: the ones recorded by earlier runs, with each option given now replacing its own."""
    rules = ScanRules.from_settings(recorded)
    return ScanRules(
        rules.include_hidden if include_hidden is None else include_hidden,
        rules.exclude if exclude is None else tuple(exclude),
    )
