"""Typed errors. Library code raises these; only the CLI turns them into messages and exit codes.

Messages name the parameters a caller passed in backticks (`threshold`, `device=cuda`), the way a Python or
HTTP caller wrote them; the CLI shows each as the flag that sets it (cli/flags.py).
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SKIPPED = 3  # `index --strict`: some files were skipped
EXIT_NOTHING_LIVE = 4  # `query`: no hits, because every candidate's file is gone (docs/cli-guide.md)
EXIT_UNREADABLE_ROOT = 5  # `index`: a folder or file given to it could not be read at all (docs/cli-guide.md)
EXIT_NO_MATCH = 6  # `query --min-match P`: no hit of any query has an ITM probability of at least P (docs/cli-guide.md)


class BtSearchError(Exception):
    """Base class: `str(err)` is a one-line message that says what to do."""

    exit_code = EXIT_FAILURE


class UsageError(BtSearchError):
    exit_code = EXIT_USAGE


class WorkLimitError(UsageError):
    """One request asks for more work than a server does at once (queries, candidates, text length)."""


class SearchCancelledError(BtSearchError):
    """The caller's `cancelled` hook asked a running search to stop (a server shutting down)."""


class ModelLoadError(BtSearchError):
    """The checkpoint could not be found or read (offline, wrong id, missing files)."""


class MissingHeadError(BtSearchError):
    """The checkpoint lacks a head the operation needs (ITC heads for search, ITM head for rerank)."""


class IndexMissingError(BtSearchError):
    """No index at the given directory, or it holds no images."""


class IndexFormatError(BtSearchError):
    """The index was written by an incompatible format version, or is damaged."""


class IndexLockedError(BtSearchError):
    """Another writer holds the index lock."""


class ModelMismatchError(BtSearchError):
    """The index was built with another model (or embedding space) than the one asked for."""


class ImageDecodeError(BtSearchError):
    """One file could not be turned into an image; `reason` is short and human-readable."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def describe_os_error(err: OSError) -> str | None:
    """A one-line message for the OS errors a user can act on (disk full, read-only, permission, I/O);
    None for the rest, which are surprises."""
    where = err.filename2 or err.filename
    at = f" ({where})" if where else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{at}: free some space and run the command again (committed work is kept)"
    if err.errno == errno.EROFS:
        return f"the file system is read-only{at}: give `index` a folder you can write to"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{at}: check the folder's owner and mode, or give `index` a folder you can write to"
    if err.errno == errno.EIO:
        return f"input/output error{at}: the disk or network mount may be failing"
    return None
