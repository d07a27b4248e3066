"""The fault engine (local/faults.py): profile files, deterministic decisions with a seed, outages, counters."""

from __future__ import annotations

import json

import pytest

from local.faults import (
    SERVICES,
    FaultEngine,
    FaultSummary,
    ProfileError,
    load_profile,
    service_profile,
)

DOC = {
    "seed": 7,
    "services": {
        "keyvault": {
            "default": {"latency_ms": [5, 10]},
            "exempt": ["^/health$"],
            "operations": [{"name": "sign", "method": "POST", "path": "/sign$", "latency_ms": 50,
                            "errors": {"429": 0.2, "503": 0.1, "reset": 0.1, "hang": 0.1}, "hang_s": 3,
                            "retry_after_s": 2}],
            "outages": [{"after_s": 100, "for_s": 10, "fault": "reset", "every_s": 60}],
        }
    },
}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def engine(seed=None, clock=None) -> FaultEngine:
    return FaultEngine(service_profile(DOC, "keyvault", "test"), seed=seed, clock=clock or Clock())


def test_the_same_seed_replays_the_same_faults_and_another_seed_does_not():
    first = engine(1)
    second = engine(1)
    other = engine(2)
    a = [first.decide("POST", "/keys/ca/1/sign") for _ in range(300)]
    b = [second.decide("POST", "/keys/ca/1/sign") for _ in range(300)]
    c = [other.decide("POST", "/keys/ca/1/sign") for _ in range(300)]
    assert a == b
    assert [d.fault for d in a] != [d.fault for d in c]


def test_error_rates_are_about_what_the_profile_says_and_are_counted_by_kind():
    e = engine(3)
    faults = [e.decide("POST", "/keys/ca/1/sign").fault for _ in range(5000)]
    share = {kind: faults.count(kind) / len(faults) for kind in ("429", "503", "reset", "hang")}
    assert 0.17 < share["429"] < 0.23 and 0.08 < share["503"] < 0.12
    assert 0.08 < share["reset"] < 0.12 and 0.08 < share["hang"] < 0.12
    counters = e.counters()
    assert counters["requests"] == 5000 and counters["profile"] == "test"
    assert counters["injected"]["429"] == faults.count("429")
    assert counters["operations"]["sign"] == counters["injected"]


def test_operations_match_by_method_and_path_and_carry_their_settings():
    e = engine(4)
    sign = next(d for d in (e.decide("POST", "/keys/ca/1/sign") for _ in range(100)) if d.fault == "429")
    assert sign.operation == "sign" and sign.retry_after_s == 2 and sign.delay_s == pytest.approx(0.05)
    hang = next(d for d in (e.decide("POST", "/keys/ca/1/sign") for _ in range(100)) if d.fault == "hang")
    assert hang.hang_s == 3
    read = e.decide("GET", "/keys/ca/1/sign")  # another method: the default
    assert read.operation == "default" and read.fault is None and 0.005 <= read.delay_s <= 0.010


def test_exempt_paths_and_the_counters_route_are_never_faulted_nor_counted():
    e = engine(5)
    assert e.decide("GET", "/health") is None and e.decide("GET", "/_faults") is None
    assert e.counters()["requests"] == 0


def test_a_scheduled_outage_faults_every_request_while_open_and_repeats():
    clock = Clock()
    e = engine(6, clock)
    clock.now = 99
    assert e.decide("GET", "/certificates/ca").fault is None
    for now in (100, 105, 109.9, 160, 165):
        clock.now = now
        decision = e.decide("GET", "/certificates/ca")
        assert decision.fault == "reset" and decision.operation == "outage", now
    clock.now = 111
    assert e.decide("GET", "/certificates/ca").fault is None
    assert e.counters()["operations"]["outage"] == {"reset": 5}


def test_a_service_without_a_part_in_the_profile_is_left_alone():
    e = FaultEngine(service_profile(DOC, "identity", "test"))
    assert not e.active
    assert all(e.decide("GET", "/msi/token").fault is None for _ in range(100))


@pytest.mark.parametrize("bad, message", [
    ({"errors": {"418": 0.1}}, "unknown fault kind"),
    ({"errors": {"500": 0.7, "503": 0.6}}, "sum to at most 1"),
    ({"latency_ms": [10, 5]}, "latency_ms"),
    ({"path": "("}, "regular expression"),
])
def test_a_malformed_profile_is_refused_naming_the_field(bad, message):
    with pytest.raises(ProfileError, match=message):
        service_profile({"services": {"iothub": {"operations": [bad]}}}, "iothub", "broken")


def test_profile_files_load_by_name_or_path_and_name_only_known_services(tmp_path):
    for name in ("realistic", "bad-day"):
        stem, document = load_profile(name)
        assert stem == name and set(document["services"]) <= set(SERVICES)
        for service in SERVICES:
            service_profile(document, service, stem)  # every part parses
    _, bad_day = load_profile("bad-day")
    assert all(service_profile(bad_day, s, "bad-day").default.errors for s in ("iothub", "keyvault", "dps"))
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"services": {"blob": {}}}))
    with pytest.raises(ProfileError, match="unknown service"):
        load_profile(str(path))
    with pytest.raises(ProfileError, match="not found"):
        load_profile("no-such-profile")


def test_summary_sums_the_stand_ins_counters_by_kind():
    summary = FaultSummary()
    summary.add("west", {"injected": {"429": 3, "reset": 1}})
    summary.add("keyvault", {"injected": {"429": 2, "hang": 1}})
    assert summary.line() == "faults injected: 7 (429 5, 500 0, 503 0, reset 1, hang 1)"
