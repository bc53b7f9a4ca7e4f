"""How a path is written in the index's `path` columns, which are Arrow strings (valid UTF-8 only).

A POSIX file name is bytes; Python reads a name that is not valid UTF-8 with each undecodable byte as a lone
surrogate (U+DC80..U+DCFF, "surrogateescape"), which Arrow cannot store. Such a byte is stored as NUL and two
lowercase hex digits ("ok\\xff.png" -> "ok\\x00ff.png"). No file name or folder holds a NUL, so this is
lossless, and every UTF-8 path (all that earlier versions could store) is stored unchanged. The escape works
character by character, so a folder's stored form is a prefix of its files' stored forms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ESCAPE = "\0"
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_STORED_BYTE = re.compile("\0([0-9a-f]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")


def stored_path(path: str) -> str:
    """The form of `path` in the index. Raises ValueError for a path no file system gives (a NUL, or a
    surrogate that is not an undecodable byte)."""
    if path.isascii():
        if ESCAPE in path:
            raise ValueError(f"index paths cannot hold a NUL character: {path!r}")
        return path
    stored = _ESCAPED_BYTE.sub(lambda match: f"{ESCAPE}{ord(match.group()) - 0xDC00:02x}", path)
    if ESCAPE in path or _SURROGATE.search(stored):
        raise ValueError(f"not a file system name: {path!r}")
    return stored


def original_path(stored: str) -> str:
    """The path (a str, undecodable bytes as surrogates, as os.fsdecode gives) of a stored `path` value."""
    if ESCAPE not in stored:
        return stored
    return _STORED_BYTE.sub(lambda match: chr(0xDC00 + int(match.group(1), 16)), stored)


def stored_paths(paths: Iterable[str]) -> list[str]:
    return [stored_path(path) for path in paths]


def original_paths(stored: Iterable[str]) -> list[str]:
    return [original_path(value) for value in stored]
