"""Sources for an index run: local folders and files, fsspec-style URLs, and lists of either in a file.

Imports no Ray (the CLI reads `--from-list` for either executor). URLs (`s3://`, `gs://`, `file://`, ...)
are read through pyarrow's filesystems, which the core install already has; their rows keep the URL as
given, as local rows keep their absolute path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from bt_search.errors import UsageError
from bt_search.media.scan import FileRecord, Listing, ScanProblem, has_image_extension, scan
from bt_search.media.scan_rules import ScanRules

PATH_COLUMNS = ("path", "url", "uri", "file")  # the column a Parquet/CSV list names its files in


def is_url(source: str) -> bool:
    return "://" in source


def read_source_list(list_file: str | os.PathLike[str]) -> list[str]:
    """Paths/URLs from a text file (one per line), or from the path column of a Parquet or CSV file.

    Relative paths stay relative to the working directory, as on the command line.
    """
    path = Path(list_file)
    if not path.is_file():
        raise UsageError(f"`from_list` {list_file}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return _path_column(pq.read_table(path), list_file)
    if suffix in (".csv", ".tsv"):
        import pyarrow.csv as pcsv

        options = pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        return _path_column(pcsv.read_csv(path, parse_options=options), list_file)
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _path_column(table, list_file) -> list[str]:
    names = [name for name in table.column_names if name.lower() in PATH_COLUMNS]
    if not names and table.num_columns == 1:
        names = table.column_names
    if not names:
        raise UsageError(f"`from_list` {list_file}: no path column (name one of {', '.join(PATH_COLUMNS)})")
    return [value for value in table.column(names[0]).to_pylist() if value]


def list_sources(
    sources: Sequence[str],
    skip: Sequence[str | os.PathLike[str]] = (),
    listed: Listing | None = None,
    rules: ScanRules = ScanRules(),
) -> tuple[list[FileRecord], list[ScanProblem]]:
    """Every candidate image under `sources`: local ones through the safe scanner, URLs through pyarrow.

    Raises UsageError, before listing anything, when a source does not exist.
    """
    local = [source for source in sources if not is_url(source)]
    urls = [source for source in sources if is_url(source)]
    for url in urls:
        _url_info(url)  # fail fast on a missing source, as scan() does for local roots
    records, problems = [], []
    for item in [
        *scan(local, skip=skip, listed=listed, rules=rules),
        *(item for url in urls for item in _list_url(url)),
    ]:
        (records if isinstance(item, FileRecord) else problems).append(item)
    return _first_of_each_path(records), problems


def _first_of_each_path(records: list[FileRecord]) -> list[FileRecord]:
    seen: set[str] = set()
    return [r for r in records if not (r.path in seen or seen.add(r.path))]


def _filesystem(url: str):
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(url)
    except (ValueError, OSError) as err:
        raise UsageError(f"cannot open {url}: {err}") from None
    return filesystem, path


def _url_info(url: str):
    from pyarrow import fs

    filesystem, path = _filesystem(url)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise UsageError(f"{url} does not exist; give an existing folder or image URL")
    return filesystem, info


def _list_url(url: str) -> Iterator[FileRecord | ScanProblem]:
    """The image files at or under one URL, in name order, named by URL (scheme + the filesystem's path)."""
    from pyarrow import fs

    filesystem, info = _url_info(url)
    prefix = url.split("://", 1)[0] + "://"
    if info.type != fs.FileType.Directory:
        if not has_image_extension(info.path):
            yield ScanProblem(url, "not an image file name (unknown extension)")
            return
        yield _url_record(url, info)
        return
    listing = filesystem.get_file_info(fs.FileSelector(info.path, recursive=True))
    for entry in sorted(listing, key=lambda e: e.path):
        if entry.type == fs.FileType.File and has_image_extension(entry.path):
            yield _url_record(prefix + entry.path, entry)


def _url_record(url: str, info) -> FileRecord:
    return FileRecord(path=url, size=int(info.size or 0), mtime_ns=int(info.mtime_ns or 0))


def read_bytes(path: str, limit: int) -> bytes:
    """A file's first `limit` + 1 bytes (all of it when smaller), from a local path or a URL, so a huge file
    costs no more memory than the cap. Raises OSError (pyarrow's errors are OSErrors too)."""
    if not is_url(path):
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    from pyarrow import fs

    try:
        filesystem, inner = fs.FileSystem.from_uri(path)
    except ValueError as err:  # an unknown scheme: a reason to record, not a crash
        raise OSError(str(err)) from None
    with filesystem.open_input_stream(inner) as stream:
        return stream.read(limit + 1)
