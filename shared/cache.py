"""A small TTL cache with single-flight loading, shared by concurrent invocations in one worker.

One loader call per key and expiry, however many requests arrive at once (DPS can send ~1,000 registrations a
minute); a failed load is remembered for error_ttl_s so a broken dependency is not hammered, and is raised
again to every caller in that window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    expires: float
    value: T | None = None
    error: BaseException | None = None


class TtlCache(Generic[T]):
    def __init__(self, ttl_s: float, error_ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._ttl_s = ttl_s
        self._error_ttl_s = min(error_ttl_s, ttl_s)  # a failure is never remembered longer than a success
        self._clock = clock
        self._entries: dict[Hashable, _Entry[T]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def _fresh(self, key: Hashable) -> _Entry[T] | None:
        entry = self._entries.get(key)
        return entry if entry is not None and entry.expires > self._clock() else None

    def get(self, key: Hashable, loader: Callable[[], T]) -> T:
        entry = self._fresh(key)
        if entry is None:
            with self._guard:
                lock = self._locks.setdefault(key, threading.Lock())
            with lock:
                entry = self._fresh(key)  # another caller may have loaded it while we waited
                if entry is None:
                    try:
                        entry = _Entry(self._clock() + self._ttl_s, value=loader())
                    except Exception as exc:  # noqa: BLE001 - remembered and re-raised below
                        entry = _Entry(self._clock() + self._error_ttl_s, error=exc)
                    self._entries[key] = entry
        if entry.error is not None:
            raise entry.error
        return entry.value  # type: ignore[return-value]

    def invalidate(self, key: Hashable | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)
