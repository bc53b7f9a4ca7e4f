"""Typed errors. Library code raises these; only the CLI turns them into messages and exit codes."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SKIPPED = 3  # `index --strict`: some files were skipped


class BtSearchError(Exception):
    """Base class: `str(err)` is a one-line message that says what to do."""

    exit_code = EXIT_FAILURE


class UsageError(BtSearchError):
    exit_code = EXIT_USAGE


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
