"""Spend a server's idle time where it pays: vision states for the candidates recent queries shortlisted but did
not rerank (the images just past each shortlist, and any a rerank budget left out), so a later query on a
nearby theme finds them cached and pays the text tower and the fusion layers only.

`serve --idle-states` turns it on. The states go into the server's state cache, never past its budget (nothing
cached is evicted for a guess). One image at a time: between images the worker checks that no request is in
flight (and has not been for `settle_s`), and it holds the model lock for one image only, so a request that
arrives waits at most one image's vision tower. The newest query's candidates come first, best first.

A state computed alone can differ from one computed in a batch in the last bits of its floats (the same holds
for every state the cache keeps), so with this on a served answer may differ from `--no-server`'s in the
seventh significant digit; it is off by default for that reason.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from bt_search.errors import ImageDecodeError
from bt_search.media.decoding import load_file_pixels
from bt_search.search.searcher import RERANK_DRAFT_DECODE, state_key

MAX_PENDING = 2_048  # candidates remembered; the oldest are forgotten first


class IdleStates:
    def __init__(self, service, idle_seconds: Callable[[], float], *, settle_s: float = 0.25):
        self.service = service
        self.idle_seconds = idle_seconds  # seconds without a request in flight (0 while one is)
        self.settle_s = settle_s
        self.pending: OrderedDict[Hashable, tuple] = OrderedDict()  # (index state, key) -> (file, time), next first
        self.computed = 0  # states this worker added to the cache
        self.state_bytes = 0  # the size of one state, once one is computed
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def offer(self, state_id: tuple, candidates: list[tuple[str, float | None]]) -> None:
        """A search's shortlisted but unreranked candidates (file, video frame time or None), best first: they go
        before every older offer."""
        with self._lock:
            for candidate in reversed(candidates):
                key = (state_id, state_key(*candidate))  # as the search's state store keys it
                self.pending[key] = candidate
                self.pending.move_to_end(key, last=False)
            while len(self.pending) > MAX_PENDING:
                self.pending.popitem(last=True)
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="idle-states", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.pending:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            idle = self.idle_seconds()
            if idle < self.settle_s:  # a request in flight (idle 0), or one just ended: look again shortly
                self._stop.wait(self.settle_s - idle if idle > 0 else self.settle_s / 2)
                continue
            try:
                room = self.step()
            except Exception:  # noqa: BLE001 - a guess that failed (an odd file): the next one may not
                continue
            if not room:  # the cache is full: nothing more until the next offer
                self._wake.clear()
                self._wake.wait(timeout=60.0)

    def run_until_busy(self) -> int:
        """Compute states until none is pending, a request arrives or the budget is reached (tests, benchmarks);
        the number computed."""
        before = self.computed
        while self.pending and self.idle_seconds() >= self.settle_s and self.step():
            pass
        return self.computed - before

    def step(self) -> bool:
        """Compute the next pending state (skipping one cached already, or of another index state); False, with
        nothing computed, when the state cache has no room for another (nothing is evicted for a guess)."""
        service, states = self.service, self.service.states
        if self.state_bytes and states.used_bytes + self.state_bytes > states.budget_bytes:
            return False
        with self._lock:
            if not self.pending:
                return True
            key, candidate = self.pending.popitem(last=False)
        if key[0] != service.reader.state_id or key in states:
            return True
        with service.model_lock:
            if self.idle_seconds() < self.settle_s:  # a request came while we waited for the lock: it goes first
                self._put_back(key, candidate)
                return True
            file, time = candidate
            try:
                pixels = load_file_pixels(
                    file, service.engine.preprocessing, draft=RERANK_DRAFT_DECODE, frame_time=time
                )
            except ImageDecodeError:
                return True  # a search reports it when it meets it
            state = service.engine.vision_states(pixels[None])[0]
        self.state_bytes = state.numel() * state.element_size()
        if not states.put_if_room(key, state):
            self._put_back(key, candidate)
            return False
        self.computed += 1
        return True

    def _put_back(self, key: Hashable, candidate: tuple) -> None:
        with self._lock:
            self.pending[key] = candidate
            self.pending.move_to_end(key, last=False)
