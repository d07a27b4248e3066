import threading

import pytest

from shared.cache import TtlCache


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_value_is_reused_until_it_expires():
    clock, calls = Clock(), []
    cache = TtlCache(10, clock=clock)
    load = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert cache.get("k", load) == 1
    clock.now = 9.9
    assert cache.get("k", load) == 1
    clock.now = 10.1
    assert cache.get("k", load) == 2


def test_failure_is_remembered_briefly_then_retried():
    clock, calls = Clock(), []

    def failing():
        calls.append(1)
        raise ConnectionError("down")

    cache = TtlCache(60, error_ttl_s=5, clock=clock)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            cache.get("k", failing)
    assert len(calls) == 1
    clock.now = 6
    assert cache.get("k", lambda: "up") == "up"


def test_concurrent_callers_share_one_load():
    started, release, calls = threading.Event(), threading.Event(), []

    def slow():
        calls.append(1)
        started.set()
        release.wait(5)
        return "v"

    cache = TtlCache(60)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", slow))) for _ in range(8)]
    for t in threads:
        t.start()
    started.wait(5)
    release.set()
    for t in threads:
        t.join(5)
    assert results == ["v"] * 8 and len(calls) == 1
