"""The one retry policy: transient failures (429, 503, timeouts) retried with backoff that honours Retry-After
(delta-seconds or an HTTP date), within a time budget.

A caller with a deadline makes one RetryBudget for its whole unit of work (twin setup: one per event, so the
handler answers Event Grid within its 30 s delivery timeout) and hands it to every call; a caller without one
lets each call make its own. When the budget or the attempts run out, or the service asks for a longer wait
than the budget has left, the last TransientError is raised and the platform's own retry takes over (Event
Grid redelivery, queue dequeue count, the timer's next run). A timer run or queue message has a RunBudget: it stops
starting new work when its time is spent and leaves the rest to the next run. docs/architecture.md "Retries".
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, replace
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


# --- run budgets: a timer run's or a queue message's time ----------------------------------------------------

# Each trigger's time for one run (docs/architecture.md "Retries", issue 16), in seconds: under host.json's
# functionTimeout (5 min) with room for the call in flight when the budget runs out, and under the trigger's period
# so that a slow run does not hold up the next one (timers run as a singleton: a late run delays the next).
FUNCTION_TIMEOUT_S = 300
RUN_BUDGETS_S = {
    "refresh_crls": 240,  # every 6 h; one CA's CRL at a time
    "scan_expiring_certificates": 240,  # daily; hubs, then renewal messages, digests, tags
    "collect_renewal_csrs": 240,  # hourly at :05; one renewal at a time
    "capacity_report": 120,  # daily; statistics of every hub in parallel, then SQL
    "onboarding_funnel": 25,  # every 30 s
    "process_renewal": 120,  # one queue message: one device
    "check_config_drift": 240,  # hourly at :17; one hub's twin query, then one re-applied sensor at a time
}


class RunBudget:
    """The time one timer run or queue message may take. A run asks `spent()` before it starts each unit of work
    (a hub, a CA, a device) and stops starting new ones once fewer than `reserve_s` seconds are left (the longest a
    unit may take once started: its calls' timeouts), so it ends within its budget; what it did not start it counts
    with `defer()`, and leaves to the next run, which finds the same work again (nothing is taken off a list before
    it is done). `calls()` cuts the retries of the calls a run makes to what the run has left."""

    def __init__(self, what: str, seconds: float, reserve_s: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.what = what
        self.seconds = float(seconds)
        self.reserve_s = float(reserve_s)
        self._clock = clock
        self._started = clock()
        self.exhausted = False  # set once spent() said so: the run stopped early
        self.left: Counter[str] = Counter()  # units not started, by kind

    @classmethod
    def for_trigger(cls, trigger: str, reserve_s: float = 0.0, **kwargs) -> RunBudget:
        return cls(trigger, RUN_BUDGETS_S[trigger], reserve_s, **kwargs)

    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def remaining_s(self) -> float:
        return max(0.0, self.seconds - self.elapsed_s())

    def spent(self) -> bool:
        """True once no new unit of work may start (and from then on)."""
        if not self.exhausted and self.remaining_s() <= self.reserve_s:
            self.exhausted = True
            log.warning("%s: run budget of %gs spent after %.1fs; the rest is left to the next run", self.what,
                        self.seconds, self.elapsed_s())
        return self.exhausted

    def calls(self, policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep) -> RetryBudget:
        """A RetryBudget for calls made in this run: the policy's, cut to what the run has left past its reserve."""
        room = max(0.0, self.remaining_s() - self.reserve_s)
        return RetryBudget(replace(policy, budget_s=min(policy.budget_s, room)), sleep=sleep, clock=self._clock)

    def call_kwargs(self, hub) -> dict:
        """Keyword arguments for an IoT Hub adapter call in this run: {"budget": calls(hub.policy)}; none for a run
        without a limit (the call makes its own budget, as before run budgets)."""
        return {"budget": self.calls(hub.policy)} if self.seconds != float("inf") else {}

    def defer(self, kind: str, count: int = 1) -> None:
        if count:
            self.left[kind] += count

    def take(self, items: Iterable[T], kind: str) -> Iterator[T]:
        """The items while the budget lasts; once it is spent the rest are counted in left[kind], not started.
        Counting needs a sized collection (a list): a lazy query must not be read on just to count it."""
        taken = 0
        for item in items:
            if self.spent():
                rest = len(items) - taken if isinstance(items, Sized) else 1
                self.defer(kind, rest)
                return
            taken += 1
            yield item

    def summary(self) -> dict:
        """For the run's report and log line."""
        return {"budgetSeconds": self.seconds, "elapsedSeconds": round(self.elapsed_s(), 2),
                "budgetExhausted": self.exhausted, "left": dict(self.left)}

    def emit(self, done: int | None = None) -> None:
        """The run's `run_budget` telemetry event (the workbook's timer runs panel): its time against its budget,
        and what it left to the next run when the budget was spent. done: the units of work it finished."""
        from shared import telemetry

        telemetry.emit("run_budget", self.elapsed_s() * 1000, trigger=self.what, budgetSeconds=self.seconds,
                       budgetExhausted=self.exhausted, done=done, leftToNextRun=sum(self.left.values()),
                       left=",".join(f"{kind}:{n}" for kind, n in sorted(self.left.items())) or None)


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
