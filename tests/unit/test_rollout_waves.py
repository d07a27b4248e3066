"""A rollout's pure decisions: the canary and its waves, pacing per hub, the canary's verdict, the next step."""

from __future__ import annotations

from twin_setup.rollout import (
    ACKNOWLEDGED,
    FAILED,
    PENDING,
    RUNNING,
    WRITTEN,
    DeviceProgress,
    Pacer,
    RolloutPolicy,
    Target,
    acknowledged,
    canary_verdict,
    next_step,
    plan_waves,
)


def targets(n: int, facilities=("FAC01", "FAC02", "FAC03")) -> list[Target]:
    return [Target(f"sensor-temp-{facilities[i % len(facilities)]}-SN{i:04d}", f"hub{i % 2}",
                   facilities[i % len(facilities)]) for i in range(n)]


def test_the_canary_is_a_share_spread_over_facilities_then_the_rest_in_waves():
    waves = plan_waves(targets(100), RolloutPolicy(canary_share=0.1, wave_size=40), salt="r1")
    assert [len(w) for w in waves] == [10, 40, 40, 10]
    assert {t.facility for t in waves[0]} == {"FAC01", "FAC02", "FAC03"}  # no single plant makes up the canary
    assert sorted(t.device_id for w in waves for t in w) == sorted(t.device_id for t in targets(100))
    assert plan_waves(targets(100), RolloutPolicy(canary_share=0.1, wave_size=40), salt="r1") == waves


def test_a_small_rollout_still_gets_a_canary_of_at_least_the_minimum():
    assert [len(w) for w in plan_waves(targets(3), RolloutPolicy(canary_share=0.1, canary_min=1), "x")] == [1, 2]
    assert [len(w) for w in plan_waves(targets(20), RolloutPolicy(canary_share=0.1), "x")] == [2, 18]
    assert plan_waves([], RolloutPolicy(), "x") == []


def test_writes_are_paced_per_hub_not_across_hubs():
    now, slept = [0.0], []

    def sleep(s):
        slept.append(round(s, 3))
        now[0] += s

    pacer = Pacer(10, clock=lambda: now[0], sleep=sleep)
    for hub in ["a", "b", "a", "a", "b"]:
        pacer.wait(hub)
    # hub a: 0, 0.1, 0.2; hub b: 0 and then its next slot (0.1) had already passed
    assert now[0] == 0.2 and slept == [0.1, 0.1]


def test_the_canary_fails_on_a_failed_write_and_passes_once_acknowledged():
    policy = RolloutPolicy(ack_timeout_s=60)
    failed = [DeviceProgress("a", WRITTEN, True), DeviceProgress("b", FAILED)]
    assert canary_verdict(failed, 1, policy).reason == "canary_failed"
    waiting = [DeviceProgress("a", WRITTEN, True), DeviceProgress("b", ACKNOWLEDGED, True)]
    assert canary_verdict(waiting, 10, policy).outcome == "wait"
    late = canary_verdict(waiting, 61, policy)
    assert late.outcome == "fail" and late.reason == "canary_not_acknowledged" and "a" in late.detail
    # a sensor that never reported a configuration counts on its write result alone
    assert canary_verdict([DeviceProgress("a", WRITTEN, False)], 0, policy).outcome == "pass"
    assert canary_verdict([DeviceProgress("a", ACKNOWLEDGED, True)], 0, policy).outcome == "pass"


def test_acknowledgement_is_the_reported_configuration_hash():
    assert acknowledged({"configuration": {"hash": "h2"}}, "h2")
    assert not acknowledged({"configuration": {"hash": "h1"}}, "h2")
    assert not acknowledged({}, "h2") and not acknowledged({"configuration": {"hash": None}}, None)


def test_next_step_writes_the_canary_verifies_it_then_writes_the_rest():
    states = {0: [PENDING], 1: [PENDING, PENDING]}
    assert next_step(RUNNING, 0, 2, states, canary_passed=False).action == "write"
    states[0] = [WRITTEN]
    assert next_step(RUNNING, 0, 2, states, canary_passed=False).action == "verify"
    step = next_step(RUNNING, 1, 2, states, canary_passed=True)
    assert (step.action, step.wave) == ("write", 1)
    states[1] = [WRITTEN, FAILED]
    assert next_step(RUNNING, 1, 2, states, canary_passed=True).action == "verify"  # every wave is verified
    assert next_step(RUNNING, 2, 2, states, canary_passed=True).action == "complete"
    assert next_step("halted", 0, 2, states, canary_passed=False).action == "idle"
