"""The server's bounded memories: vision states by bytes, results and served paths by count."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import torch


class StateLRU:
    """Candidates' vision-tower states by key (index state, image path), least recently used dropped first,
    under `budget_bytes`.

    Each state is cloned on the way in: a row of a batch tensor is a view that
    would keep the whole batch alive and make the byte count a lie.
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._states: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._states  # no use: the order is left alone

    def get(self, key: Hashable) -> torch.Tensor | None:
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
            return state

    def put(self, key: Hashable, state: torch.Tensor) -> None:
        size = state.numel() * state.element_size()
        if size > self.budget_bytes:
            return
        with self._lock:
            old = self._states.pop(key, None)
            if old is not None:
                self.used_bytes -= old.numel() * old.element_size()
            while self._states and self.used_bytes + size > self.budget_bytes:
                _, dropped = self._states.popitem(last=False)
                self.used_bytes -= dropped.numel() * dropped.element_size()
            self._states[key] = state.detach().clone()
            self.used_bytes += size

    def put_if_room(self, key: Hashable, state: torch.Tensor) -> bool:
        """Keep `state` only if it fits beside what is kept (nothing is dropped for it); whether it was kept."""
        size = state.numel() * state.element_size()
        with self._lock:
            if key in self._states:
                return True
            if self.used_bytes + size > self.budget_bytes:
                return False
            self._states[key] = state.detach().clone()
            self.used_bytes += size
            return True

    def clear(self) -> None:
        with self._lock:
            self._states.clear()
            self.used_bytes = 0


class SmallLRU:
    """A thread-safe LRU mapping of at most `capacity` entries (results, thumbnails, served paths)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
