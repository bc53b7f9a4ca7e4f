"""One way to read an indexed file, a local path or a URL: the local indexer, the Ray decode tasks and the
query's rerank all read through here, so they accept the same rows and record the same reasons.

URLs (`s3://`, `gs://`, `file://`, ...) go through pyarrow's filesystems, imported on first use: a decode
worker reading local files imports nothing beyond the standard library from this module.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from bt_search import config
from bt_search.errors import ImageDecodeError

BUCKET_SCHEMES = ("s3", "gs", "gcs")  # pyarrow's path in these is bucket + key: no filesystem per URL needed
URL_CHECKS_AT_ONCE = 16  # existence requests in flight (pyarrow releases the GIL while it waits)


def is_url(source: str) -> bool:
    return "://" in source


def read_file_bytes(path: str, limit: int | None = None) -> bytes:
    """The bytes of a file (a local path or a URL), at most `limit` of them (None: `config.max_file_bytes()`),
    so a huge file (a 64 GB sparse TIFF) costs no more memory than the cap.

    Raises ImageDecodeError with the reason recorded for the file: too large, or cannot be read.
    """
    limit = config.max_file_bytes() if limit is None else limit
    try:
        data = _read_url(path, limit) if is_url(path) else _read_local(path, limit)
    except OSError as err:  # pyarrow's errors are OSErrors too
        raise ImageDecodeError(path, read_failure(err)) from None
    if data is None or len(data) > limit:
        raise ImageDecodeError(path, too_large_reason(limit))
    return data


def read_failure(err: OSError) -> str:
    """The reason recorded for a file that cannot be read."""
    return f"cannot read file ({err.strerror or err})"


def too_large_reason(limit: int) -> str:
    return f"file too large (over {limit / (1 << 20):g} MB; raise {config.ENV_MAX_FILE_MB} to index it)"


def _read_local(path: str, limit: int) -> bytes | None:
    """The file's first `limit` + 1 bytes; None when it is already larger than `limit` (not read at all)."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size > limit:
            return None
        return handle.read(limit + 1)  # the file may have grown since fstat


def _read_url(url: str, limit: int) -> bytes:
    filesystem, inner = url_location(url)
    with filesystem.open_input_stream(inner) as stream:
        return stream.read(limit + 1)


def existing_files(paths: Iterable[str]) -> set[str]:
    """Those of `paths` that are regular files now. URLs are asked per filesystem (one per bucket), up to
    URL_CHECKS_AT_ONCE requests at a time, so a shortlist of URLs costs about one round trip, not one per
    file; a URL that cannot be asked (unknown scheme, no credentials, network down) counts as missing."""
    by_filesystem: dict[tuple[str, str, str], tuple[object, list[tuple[str, str]]]] = {}
    found = set()
    for path in dict.fromkeys(paths):
        if not is_url(path):
            if os.path.isfile(path):
                found.add(path)
            continue
        try:
            filesystem, inner = url_location(path)
        except OSError:
            continue
        by_filesystem.setdefault(_filesystem_key(path), (filesystem, []))[1].append((path, inner))
    for filesystem, located in by_filesystem.values():
        found.update(_existing_urls(filesystem, located))
    return found


def _existing_urls(filesystem, located: list[tuple[str, str]]) -> set[str]:
    from pyarrow import fs

    def is_file(inner: str) -> bool:
        try:
            return filesystem.get_file_info(inner).type == fs.FileType.File
        except OSError:
            return False

    with ThreadPoolExecutor(max_workers=min(URL_CHECKS_AT_ONCE, len(located))) as pool:
        found = pool.map(is_file, [inner for _, inner in located])
        return {url for (url, _), exists in zip(located, found) if exists}


def url_location(url: str):
    """(pyarrow filesystem, path inside it) of a URL. Raises OSError for a URL pyarrow cannot open."""
    parts = urlsplit(url)
    if parts.scheme in BUCKET_SCHEMES:
        return _filesystem_for(*_filesystem_key(url)), unquote(parts.netloc + parts.path)
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(url)
    except ValueError as err:  # an unknown scheme or a malformed URL: a reason to record, not a crash
        raise OSError(str(err)) from None


def _filesystem_key(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc, parts.query


@lru_cache(maxsize=64)
def _filesystem_for(scheme: str, netloc: str, query: str):
    """One filesystem per bucket (and options): making an S3 one may cost a request to find its region."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(f"{scheme}://{netloc}/" + (f"?{query}" if query else ""))[0]
    except ValueError as err:
        raise OSError(str(err)) from None


def file_sha256(path: str) -> str:
    """The SHA-256 of a local file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
