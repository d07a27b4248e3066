"""S1 throttles of the IoT Hub emulator, on a fake clock."""

from __future__ import annotations

from local.iothub.config import RateLimits
from local.iothub.ratelimit import QUERY, REGISTRY, TWIN_UPDATE, RateLimiter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def burst(limiter: RateLimiter, operation: str, calls: int) -> list[int | None]:
    return [limiter.check(operation) for _ in range(calls)]


def test_queries_allow_20_a_minute_then_say_when_to_retry():
    clock = Clock()
    limiter = RateLimiter(RateLimits(), clock)
    assert burst(limiter, QUERY, 20) == [None] * 20
    assert limiter.check(QUERY) == 3  # one query every 3 s refills
    clock.now += 3
    assert limiter.check(QUERY) is None
    assert limiter.check(QUERY) is not None


def test_operation_classes_have_separate_buckets():
    limiter = RateLimiter(RateLimits(), Clock())
    burst(limiter, QUERY, 20)
    assert limiter.check(QUERY) is not None
    assert limiter.check(REGISTRY) is None and limiter.check(TWIN_UPDATE) is None


def test_twin_updates_allow_50_a_second():
    clock = Clock()
    limiter = RateLimiter(RateLimits(), clock)
    assert burst(limiter, TWIN_UPDATE, 50) == [None] * 50
    assert limiter.check(TWIN_UPDATE) == 1
    clock.now += 0.1
    assert burst(limiter, TWIN_UPDATE, 5) == [None] * 5


def test_units_and_multiplier_scale_and_disabled_never_throttles():
    assert burst(RateLimiter(RateLimits(units=2), Clock()), REGISTRY, 201).count(None) == 200
    assert burst(RateLimiter(RateLimits(multiplier=10), Clock()), QUERY, 201).count(None) == 200
    assert burst(RateLimiter(RateLimits(enabled=False), Clock()), QUERY, 1000).count(None) == 1000
