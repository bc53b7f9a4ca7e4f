"""Sources for an index run: local folders and files, fsspec-style URLs, and lists of either in a file.

Imports no Ray (the CLI reads `--from-list` for either executor). URLs (`s3://`, `gs://`, `file://`, ...)
are listed through pyarrow's filesystems, which the core install already has, and read through
`file_reading`; their rows keep the URL as given, as local rows keep their absolute path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from bt_search.errors import UsageError
from bt_search.media.file_reading import is_url, url_location
from bt_search.media.scan import FileRecord, Listing, ScanProblem, has_image_extension, scan, split_missing
from bt_search.media.scan_rules import ScanRules

PATH_COLUMNS = ("path", "url", "uri", "file")  # the column a Parquet/CSV list names its files in
COMMENT = "#"  # a text list's line starting with it is a comment


def read_source_list(list_file: str | os.PathLike[str]) -> list[str]:
    """Paths/URLs from a text file (one per line; blank lines and `#` comments skipped), or from the path
    column of a Parquet or CSV file.

    Relative paths stay relative to the working directory, as on the command line. A text list's bytes that
    are not UTF-8 name files as the file system does (surrogateescape).
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
    lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith(COMMENT)]


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
    list_entries: Sequence[str] = (),
) -> tuple[list[FileRecord], list[ScanProblem]]:
    """Every candidate image under `sources` and `list_entries` (read from a source list): local ones through
    the safe scanner, URLs through pyarrow.

    Raises UsageError, before listing anything, when one of `sources` does not exist; an entry of
    `list_entries` that does not exist is a problem (a failed row), and the run goes on.
    """
    local_entries, problems = split_missing(entry for entry in list_entries if not is_url(entry))
    local = [source for source in sources if not is_url(source)] + local_entries
    urls = {}
    for url in (source for source in sources if is_url(source)):
        located = _url_info(url)
        if isinstance(located, str):  # fail fast, as scan() does for local roots
            raise UsageError(f"{url} {located}; give an existing folder or image URL")
        urls[url] = located
    for url in (entry for entry in list_entries if is_url(entry)):
        located = urls.get(url) or _url_info(url)
        if isinstance(located, str):
            problems.append(ScanProblem(url, f"listed, but {located}"))
        else:
            urls[url] = located
    records = []
    for item in [
        *scan(local, skip=skip, listed=listed, rules=rules),
        *(item for url, located in urls.items() for item in _list_url(url, *located)),
    ]:
        (records if isinstance(item, FileRecord) else problems).append(item)
    return _first_of_each_path(records), problems


def _first_of_each_path(records: list[FileRecord]) -> list[FileRecord]:
    seen: set[str] = set()
    return [r for r in records if not (r.path in seen or seen.add(r.path))]


def _url_info(url: str):
    """(filesystem, FileInfo) of a URL, or the reason it cannot be listed (it cannot be opened, or is not there)."""
    from pyarrow import fs

    try:
        filesystem, path = url_location(url)
        info = filesystem.get_file_info(path)
    except OSError as err:
        return f"cannot be opened ({err})"
    if info.type == fs.FileType.NotFound:
        return "does not exist"
    return filesystem, info


def _list_url(url: str, filesystem, info) -> Iterator[FileRecord | ScanProblem]:
    """The image files at or under one URL, in name order, named by URL (scheme + the filesystem's path)."""
    from pyarrow import fs

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
