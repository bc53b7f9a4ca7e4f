"""Where a running server says where it listens: one small JSON file per index (stdlib only).

The file lives in `$XDG_RUNTIME_DIR/bt-search/` when that exists (per-user, mode 0700, cleared at logout),
else in the index directory itself. It is written atomically with mode 0600 (it may hold the token) and
removed on a clean exit; a stale one (a killed server) is caught by the client's /health check.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

FILE_NAME = ".bt-search-server.json"


def canonical_index(directory: str | os.PathLike[str]) -> str:
    """The one spelling of an index directory that server and client compare."""
    return os.path.realpath(os.path.expanduser(str(directory)))


def server_files(index_dir: str | os.PathLike[str]) -> list[Path]:
    """Where a server for `index_dir` may have written its file, in the order a client looks."""
    index = canonical_index(index_dir)
    places = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        key = hashlib.sha256(os.fsencode(index)).hexdigest()[:24]
        places.append(Path(runtime) / "bt-search" / f"server-{key}.json")
    places.append(Path(index) / FILE_NAME)
    return places


def write_server_file(index_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Atomically write `record` (url, pid, index, model, token) to the first writable place; return it."""
    data = json.dumps(record, ensure_ascii=True).encode()
    last_error: OSError | None = None
    for target in server_files(index_dir):
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
            return target
        except OSError as err:
            last_error = err
    raise last_error or OSError("no place to write the server file")


def read_server_records(index_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every readable server record for `index_dir` (usually none or one)."""
    records = []
    for place in server_files(index_dir):
        try:
            record = json.loads(place.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("url"), str):
            records.append(record)
    return records


def remove_server_file(path: Path, pid: int) -> None:
    """Remove our own file only: a newer server may have replaced it."""
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass
