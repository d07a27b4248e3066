"""A small TTL cache with single-flight loading, shared by concurrent invocations in one worker.

One loader call per key and expiry, however many requests arrive at once (DPS can send ~1,000 registrations a
minute); a failed load is remembered for error_ttl_s so a broken dependency is not hammered, and is raised
again to every caller in that window.

With stale_s > 0 (the allocation webhook's caches, docs/architecture.md "Retries"), a value past its TTL is still
served for up to stale_s more seconds while one caller refreshes it: the others answer with the value held
instead of waiting behind a slow dependency, and when the refresh fails the last good value stays in use until
that stale limit (the refresh is tried again after error_ttl_s). Only a key never loaded is waited for, and at
most wait_s seconds (then TimeoutError), so a hung first load holds no caller past its deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class _Entry(Generic[T]):
    expires: float
    value: T | None = None
    error: BaseException | None = None
    good_until: float = 0.0  # stale mode: the last good value may be served until then


class TtlCache(Generic[T]):
    def __init__(self, ttl_s: float, error_ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 stale_s: float = 0.0, wait_s: float | None = None):
        self._ttl_s = ttl_s
        self._error_ttl_s = min(error_ttl_s, ttl_s)  # a failure is never remembered longer than a success
        self._clock = clock
        self._stale_s = stale_s
        self._wait_s = wait_s
        self._entries: dict[Hashable, _Entry[T]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def _fresh(self, key: Hashable) -> _Entry[T] | None:
        entry = self._entries.get(key)
        return entry if entry is not None and entry.expires > self._clock() else None

    def _stale(self, key: Hashable) -> _Entry[T] | None:
        """The last good value while it may still be served (stale mode only)."""
        entry = self._entries.get(key)
        if self._stale_s <= 0 or entry is None or entry.error is not None or entry.good_until <= self._clock():
            return None
        return entry

    def _load(self, key: Hashable, loader: Callable[[], T]) -> _Entry[T]:
        previous = self._stale(key)
        try:
            value = loader()
        except Exception as exc:  # noqa: BLE001 - remembered and re-raised below
            if previous is not None:  # keep the last good value until its own limit; ask again in error_ttl_s
                log.warning("cache %r: refresh failed (%s); last good value kept", key, type(exc).__name__)
                entry = _Entry(min(previous.good_until, self._clock() + self._error_ttl_s), previous.value,
                               good_until=previous.good_until)
            else:
                entry = _Entry(self._clock() + self._error_ttl_s, error=exc)
        else:
            now = self._clock()
            entry = _Entry(now + self._ttl_s, value=value, good_until=now + self._ttl_s + self._stale_s)
        self._entries[key] = entry
        return entry

    def get(self, key: Hashable, loader: Callable[[], T]) -> T:
        entry = self._fresh(key)
        if entry is None:
            with self._guard:
                lock = self._locks.setdefault(key, threading.Lock())
            stale = self._stale(key)
            if stale is not None:
                if lock.acquire(blocking=False):  # this caller refreshes; the others answer with the value held
                    try:
                        entry = self._fresh(key) or self._load(key, loader)
                    finally:
                        lock.release()
                else:
                    entry = stale
            else:
                if not lock.acquire(timeout=-1 if self._wait_s is None else self._wait_s):
                    raise TimeoutError(f"cache {key!r}: still loading after {self._wait_s}s")
                try:
                    entry = self._fresh(key)  # another caller may have loaded it while we waited
                    if entry is None:
                        entry = self._load(key, loader)
                finally:
                    lock.release()
        if entry.error is not None:
            raise entry.error
        return entry.value  # type: ignore[return-value]

    def invalidate(self, key: Hashable | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)
