"""Where a running server says where it listens: one small JSON file per index (stdlib only).

The file lives in `$XDG_RUNTIME_DIR/bt-search/` when that exists (per-user, mode 0700, cleared at logout),
else in the index directory itself. It is written atomically with mode 0600 (it holds the server's key, and
the token if any) and removed on a clean exit; a stale one (a killed server) is caught by the client's
/health check.

A client trusts a record only when it is a regular file of its own user that nobody else may read (0600),
names a loopback address, and carries a key: a planted record (in a shared index directory, say) is
ignored. The key proves the answers: a client sends a fresh nonce with each request, and the server that
wrote the record answers with `answer_proof(key, nonce, body)`. A process that took over the port of a
stopped server cannot make one, so it is never sent a query and its hits (any path) are never printed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FILE_NAME = ".bt-search-server.json"
NONCE_HEADER = "x-bt-search-nonce"  # request: a fresh random string
PROOF_HEADER = "x-bt-search-proof"  # answer: answer_proof(key, nonce, body), or LINE_PROOFS
NDJSON = "application/x-ndjson"  # a streamed answer's type (serve/stream.py)
LINE_PROOFS = "lines"  # a streamed (NDJSON) answer: each line starts with its own proof (line_proof)
_MAX_RECORD_BYTES = 64 << 10


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def answer_proof(key: str, nonce: str, body: bytes) -> str:
    """What only the holder of the record's key can attach to an answer to `nonce`."""
    return hmac.new(key.encode(), nonce.encode("latin-1") + b"\n" + body, hashlib.sha256).hexdigest()


def is_ndjson(media_type: str) -> bool:
    """Whether a Content-Type or one Accept entry names NDJSON (parameters and case aside)."""
    return media_type.split(";")[0].strip().lower() == NDJSON


def line_proof(key: str, nonce: str, number: int, line: bytes) -> str:
    """The proof of line `number` (from 0, without its newline) of a streamed answer to `nonce`: a stream is
    used as it arrives, so each line is proven alone, and its number keeps lines from being dropped or reordered."""
    return answer_proof(key, f"{nonce}#{number}", line)


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


def read_server_records(
    index_dir: str | os.PathLike[str], on_ignored: Callable[[str], None] = lambda reason: None
) -> list[dict[str, Any]]:
    """The trusted server records for `index_dir`, the runtime directory's first (usually none or one); each
    record found but not trusted is reported to `on_ignored`, with why."""
    records = []
    for place in server_files(index_dir):
        try:
            record = _trusted_record(place)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as err:
            on_ignored(f"{place} ignored: {err}")
            continue
        records.append(record)
    return records


def _trusted_record(place: Path) -> dict[str, Any]:
    # O_NONBLOCK: a FIFO planted under the record's name must not hang the client (it is refused below).
    fd = os.open(place, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_uid != os.getuid():
            raise ValueError("owned by another user")
        if info.st_mode & 0o077:
            raise ValueError(f"mode {stat.S_IMODE(info.st_mode):o}, not 600")
        record = json.loads(f.read(_MAX_RECORD_BYTES))
    if not isinstance(record, dict) or not isinstance(record.get("url"), str):
        raise ValueError("not a server record")
    host = urlsplit(record["url"]).hostname or ""
    if not is_loopback(host):
        raise ValueError(f"{record['url']} is not a loopback address")
    if not isinstance(record.get("key"), str) or not record["key"]:
        raise ValueError("no server key (written by an older bt-search?)")
    return record


def remove_server_file(path: Path, pid: int) -> None:
    """Remove our own file only: a newer server may have replaced it."""
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass
