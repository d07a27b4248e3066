"""The one retry policy: transient failures (429, 503, timeouts) retried with backoff that honours Retry-After
(delta-seconds or an HTTP date), within a time budget.

A caller with a deadline makes one RetryBudget for its whole unit of work (twin setup: one per event, so the
handler answers Event Grid within its 30 s delivery timeout) and hands it to every call; a caller without one
lets each call make its own. When the budget or the attempts run out, or the service asks for a longer wait
than the budget has left, the last TransientError is raised and the platform's own retry takes over (Event
Grid redelivery, queue dequeue count, the timer's next run). docs/architecture.md "Retries".
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_s: float = 0.5  # first backoff when the service sent no Retry-After (doubles, jittered)
    budget_s: float = 20.0  # total time the calls under one budget may take, waits included
    max_backoff_s: float = 8.0


class TransientError(Exception):
    """A failure worth retrying: throttled (429), unavailable (5xx), timed out, connection refused."""

    def __init__(self, reason: str, retry_after_s: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # only for the HTTP-date form; the package costs ~10 ms at cold start

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetryBudget:
    def __init__(self, policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, rng: Callable[[], float] = random.random):
        self.policy = policy
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._deadline = clock() + policy.budget_s
        self.retries = 0  # how many times any call was retried
        self.waited_s = 0.0

    def remaining_s(self) -> float:
        return max(0.0, self._deadline - self._clock())

    def delay_for(self, attempt: int, error: TransientError) -> float:
        """Retry-After when the service sent one (plus up to a quarter more, so that the many invocations a
        throttled hub refused at once do not all come back in the same instant), else jittered backoff."""
        if error.retry_after_s is not None:
            return error.retry_after_s * (1 + self._rng() / 4)
        backoff = min(self.policy.max_backoff_s, self.policy.base_s * 2 ** attempt)
        return backoff * (0.5 + self._rng() / 2)

    def run(self, call: Callable[[], T], what: str) -> T:
        attempt = 0
        while True:
            try:
                return call()
            except TransientError as error:
                attempt += 1
                delay = self.delay_for(attempt - 1, error)
                if attempt >= self.policy.attempts or delay > self.remaining_s():
                    log.warning("%s: giving up after %d attempt(s): %s", what, attempt, error.reason)
                    raise
                log.info("%s: %s; retry %d in %.2fs", what, error.reason, attempt, delay)
                self.retries += 1
                self.waited_s += delay
                self._sleep(delay)


class DeadlineExceeded(TransientError):
    """A unit of work not done by its deadline; it goes on in the background (each call has its own timeout)."""


class Deadlines:
    """Runs an endpoint's unit of work in a pool thread and waits for it at most its deadline, so that the endpoint
    answers in time whatever a dependency does (a hung Key Vault holds a worker thread, never the answer). One pool
    per feature, made on first use; when every thread is held, new work waits in the queue and meets its deadline
    the same way. The allocation webhook's own form of this is allocation/service.py (its audit row has a share)."""

    def __init__(self, name: str, workers: int = 16):
        self._name = name
        self._workers = workers
        self._pool = None
        self._guard = threading.Lock()

    def _executor(self):
        from concurrent.futures import ThreadPoolExecutor

        with self._guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix=self._name)
            return self._pool

    def run(self, work: Callable[[], T], timeout_s: float, what: str, retry_after_s: float = 5) -> T:
        """work()'s result or exception; DeadlineExceeded (with retry_after_s) when not done within timeout_s."""
        from concurrent.futures import TimeoutError as FutureTimeout

        future = self._executor().submit(work)
        try:
            return future.result(timeout=max(0.0, timeout_s))
        except FutureTimeout:
            log.warning("%s not done within %.1fs; it goes on in the background", what, timeout_s)
            raise DeadlineExceeded(f"{what} not done within the {timeout_s:g}s deadline (a dependency is slow)",
                                   retry_after_s) from None

    def background(self, work: Callable[[], object]) -> None:
        """Run work without waiting (an audit row after a late answer); its failure is logged."""
        def logged():
            try:
                work()
            except Exception:  # nothing waits for it; the log is where it shows
                log.exception("%s: background work failed", self._name)

        self._executor().submit(logged)
