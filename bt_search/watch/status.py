"""What a watcher is doing, for the server's /health and search page: read from any thread."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class WatchState:
    roots: tuple[str, ...] = ()
    mode: str = "starting"  # "events", or "polling every N s"
    indexing: int = 0  # files being embedded by the batch that runs now (0: none runs)
    done: int = 0  # of those, decoded so far (embedded or failed)
    batches: int = 0  # batches finished since the watcher started
    waiting: str = ""  # why the watcher waits (the index lock is held by another run), else ""
    error: str = ""  # the last batch's error, else ""
    last_batch: dict[str, Any] = field(default_factory=dict)  # indexed, removed, seconds of the last batch
    updated: float = 0.0  # time.time() of the last change of this state


class WatchStatus:
    """The watcher's state, replaced whole on each change, so a reader always sees one consistent state."""

    def __init__(self) -> None:
        self._state = WatchState(updated=time.time())
        self._lock = threading.Lock()

    @property
    def state(self) -> WatchState:
        return self._state

    def update(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, **changes, updated=time.time())

    def advanced(self, count: int) -> None:
        with self._lock:
            self._state = replace(self._state, done=self._state.done + count, updated=time.time())

    def as_json(self) -> dict[str, Any]:
        state = asdict(self._state)
        state["roots"] = list(state["roots"])
        return state
