"""Watch a folder from a thread of this process, and wait for what the index holds (test helper)."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def wait_for(condition, timeout: float = 30.0, what: str = "the condition"):
    """Poll `condition()` until it returns a true value (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def paths_of(index: Path) -> set[str]:
    from bt_search.store import IndexReader

    return set(IndexReader.open(index).paths)


class WatcherThread:
    """A Watcher over `roots` run in a daemon thread, started (collecting changes) before the constructor returns."""

    def __init__(self, index: Path, roots, engine, **options):
        from bt_search.watch.status import WatchStatus
        from bt_search.watch.watcher import Watcher, WatchOptions

        self.stop = threading.Event()
        self.status = WatchStatus()
        self.said: list[str] = []
        options = {"workers": 0, "batch_size": 4, "debounce_ms": 300, "lock_retry_s": 0.1, **options}
        self.watcher = Watcher(
            index,
            [str(root) for root in roots],
            engine,
            options=WatchOptions(**options),
            status=self.status,
            say=self.said.append,
            stop=self.stop,
        )
        self.watcher.start()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as err:  # noqa: BLE001 - reported by close()
            self.error = err
        finally:
            self.watcher.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the watcher did not stop"
        if self.error is not None:
            raise self.error

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
