"""Run the server: check the settings, load once, listen, advertise, stop cleanly on SIGTERM/SIGINT or idleness."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bt_search.config import DEFAULT_MAX_QUEUE
from bt_search.errors import BtSearchError, UsageError
from bt_search.serve.discovery import is_loopback

Say = Callable[[str], None]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class ServeSettings:
    index_dir: Path
    model: str | None
    device: str
    precision: str
    host: str = "127.0.0.1"
    port: int = 8765
    idle_timeout: float | None = None  # seconds without a request before exiting
    state_cache_mb: int = 1024
    allow_remote: bool = False
    token: str | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    batch_size: int = 16
    watch: bool = False  # keep the index current with its folders (serve/watching.py)
    poll: float | None = None  # with watch: poll every this many seconds instead of waiting for events
    idle_states: bool = False  # compute recent queries' unreranked candidates' states while idle (serve/idle.py)


def parse_duration(text: str | None) -> float | None:
    """ "90", "90s", "15m", "2h", "1d" -> seconds; None or "0" -> None (no timeout)."""
    if text is None:
        return None
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"`idle_timeout` must look like 90s, 15m, 2h or 1d, not {text!r}")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    return seconds or None


def check_exposure(host: str, allow_remote: bool, token: str | None) -> None:
    """A server others can reach must be asked for on purpose and must require a token."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise UsageError(f"`host` {host} is reachable from other machines; add `allow_remote` and `token` to mean it")
    if not token or len(token) < 16:
        raise UsageError("`allow_remote` needs `token` (16 characters or more; env BT_SEARCH_SERVE_TOKEN)")


def allowed_hosts(host: str, port: int) -> set[str]:
    """Host header values this server answers (anything else may be a DNS-rebinding page): its own address
    (as its URL spells it), and on loopback the usual loopback names too."""
    own = (f"[{host.strip('[]')}]" if ":" in host else host).lower()
    names = {own, "127.0.0.1", "localhost", "[::1]"} if is_loopback(host) else {own}
    if host in ("0.0.0.0", "::"):
        names |= {"127.0.0.1", "localhost", "[::1]", socket.gethostname().lower(), socket.getfqdn().lower()}
    return {f"{name}:{port}" for name in names} | names


def serve_forever(settings: ServeSettings, say: Say) -> None:
    """Load the engine and index, then serve until SIGTERM/SIGINT or the idle timeout."""
    try:
        import uvicorn

        from bt_search.serve.app import build_app
    except ImportError as err:
        raise BtSearchError(
            f"`bt-search serve` needs the serve extra ({err.name} is missing): pip install 'bt-search[serve]'"
        ) from None
    from bt_search.serve.discovery import remove_server_file, write_server_file
    from bt_search.serve.service import Service

    check_exposure(settings.host, settings.allow_remote, settings.token)
    if settings.watch:
        from bt_search.watch.watcher import require_watchfiles

        require_watchfiles()  # before the model loads
    say(f"loading {settings.index_dir} ...")
    service = Service.load(
        settings.index_dir,
        settings.model,
        device=settings.device,
        precision=settings.precision,
        state_cache_mb=settings.state_cache_mb,
        batch_size=settings.batch_size,
    )
    sock = _listen(settings.host, settings.port)
    port = sock.getsockname()[1]
    key = secrets.token_hex(32)  # proves this server's answers to clients that read the record
    app = build_app(
        service,
        allowed_hosts=allowed_hosts(settings.host, port),
        token=settings.token,
        max_queue=settings.max_queue,
        key=key,
        idle_states=settings.idle_states,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            server_header=False,
            date_header=False,
            limit_concurrency=64,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
        )
    )
    url = f"http://{_url_host(settings.host)}:{port}"
    record = {
        "url": url,
        "pid": os.getpid(),
        "index": str(service.index_dir),
        "model": service.engine.model_id,
        "key": key,
    }
    if settings.token:
        record["token"] = settings.token
    advert = write_server_file(service.index_dir, record)
    images, model = service.health()["images"], service.engine.model_id
    say(f"serving {images} images from {service.index_dir} at {url}/ (model {model})")
    if settings.idle_timeout:
        _exit_when_idle(server, app, settings.idle_timeout, say)
    stop_watching = threading.Event()
    if settings.watch:
        from bt_search.serve.watching import start_watching

        watcher = start_watching(
            service, settings.poll, settings.batch_size, lambda message: say(f"watch: {message}"), stop_watching
        )
        say(f"watching {', '.join(watcher.roots)}")
    try:
        with _signals_end_quietly():
            server.run(sockets=[sock])
    finally:
        stop_watching.set()
        remove_server_file(advert, os.getpid())
        sock.close()
    say("stopped")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {err.strerror or err}; is another server running? try another `port`"
        ) from None
    sock.listen(128)
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _exit_when_idle(server, app, idle_seconds: float, say: Say) -> None:
    """Stop the server once no request has been in flight for `idle_seconds` (a long search is not idleness)."""

    def watch() -> None:
        while not server.should_exit:
            time.sleep(min(1.0, idle_seconds / 4))
            if app.idle_seconds() > idle_seconds:
                say(f"no request for {idle_seconds:g} s: stopping")
                server.should_exit = True

    threading.Thread(target=watch, name="idle-timeout", daemon=True).start()


@contextmanager
def _signals_end_quietly() -> Iterator[None]:
    """uvicorn re-raises the signal that stopped it once it has shut down; let that end run() normally
    (so the discovery file is removed and the exit status is 0) instead of killing the process."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
