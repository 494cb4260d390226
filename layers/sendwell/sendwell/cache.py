"""A small, thread-safe, bounded cache with a time-to-live, for warm Lambda containers.

Handlers create one per container for things that are expensive to fetch and slow to change
(decrypted credentials and data keys; campaign definitions). Entries expire after ``ttl``
seconds, so a change is seen within that time, unless the key itself changes with the value.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, *, ttl: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, load: Callable[[], V]) -> V:
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] > now:
                self._entries.move_to_end(key)
                return hit[1]
        value = load()
        self._store(key, value, now)
        return value

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` (one this container just wrote, say) without loading it."""
        self._store(key, value, self._clock())

    def _store(self, key: K, value: V, now: float) -> None:
        with self._lock:
            self._entries[key] = (now + self._ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
