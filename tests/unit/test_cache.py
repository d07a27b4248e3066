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


def test_stale_value_is_served_while_one_refresh_is_in_flight_and_kept_when_it_fails():
    clock = Clock()
    cache = TtlCache(10, error_ttl_s=2, clock=clock, stale_s=10)
    assert cache.get("k", lambda: "v1") == "v1"
    clock.now = 11
    entered, release = threading.Event(), threading.Event()

    def slow():
        entered.set()
        release.wait(5)
        raise ConnectionError("down")

    refresher = threading.Thread(target=lambda: cache.get("k", slow))
    refresher.start()
    assert entered.wait(5)
    assert cache.get("k", lambda: "never called") == "v1"  # not waiting behind the refresh
    release.set()
    refresher.join(5)
    assert cache.get("k", lambda: "never called") == "v1"  # failure: last good value kept, retried after 2 s
    clock.now = 21  # past the stale limit (10 + 10): nothing safe is held
    with pytest.raises(ConnectionError):
        cache.get("k", slow_fail := lambda: (_ for _ in ()).throw(ConnectionError("down")))
    del slow_fail


def test_a_first_load_is_waited_for_at_most_wait_s():
    cache = TtlCache(10, wait_s=0.1)
    entered, release = threading.Event(), threading.Event()
    loader = threading.Thread(target=lambda: cache.get("k", lambda: entered.set() or release.wait(5) or "v"))
    loader.start()
    assert entered.wait(5)
    with pytest.raises(TimeoutError):
        cache.get("k", lambda: "v")
    release.set()
    loader.join(5)
