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
