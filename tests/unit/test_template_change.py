"""The demo's mid-run template change: which template it changes, its version, its verdict and its summary line."""

from __future__ import annotations

from local.fleet.plan import PlannedDevice
from local.fleet.template_change import bump_minor, choose_type, summary_line, verify


def device(type_code: str, n: int) -> PlannedDevice:
    return PlannedDevice(f"sensor-{type_code}-FAC01-SN{n:08d}", "FAC01", type_code)


def test_the_change_takes_the_most_common_type_without_a_silent_sensor_and_never_the_gateways():
    plan = [device("temp", n) for n in range(5)] + [device("vib", n) for n in range(4)] + \
        [device("gw", n) for n in range(9)]
    assert choose_type(plan, set()) == "temp"
    assert choose_type(plan, {plan[0].device_id}) == "vib"  # a silent temperature sensor
    assert choose_type(plan, {plan[0].device_id, plan[5].device_id}) is None


def test_the_new_version_bumps_the_minor():
    assert bump_minor("1.0.0") == "1.1.0" and bump_minor("2.3.9") == "2.4.0" and bump_minor("") == "1.1.0"


def test_verification_fails_on_drift_or_an_unfinished_rollout_and_the_line_says_what_happened():
    change = {"template": "vibration-sensor.json", "versionBefore": "1.0.0", "versionAfter": "1.1.0",
              "state": "completed", "reconfigured": 456, "waves": 3, "direct": 420,
              "drift": {"drifted": 0, "held": 0, "incompleteHubs": []}}
    assert verify(change, change["drift"]) == []
    assert summary_line(change) == ("vibration-sensor.json 1.0.0 -> 1.1.0, 456 sensors reconfigured in 3 waves "
                                    "(completed), 420 onboarded with it directly, drift 0")
    drifted = {"drifted": 2, "missed": 2, "edited": 0, "held": 0, "incompleteHubs": []}
    assert any("2 sensors differ" in f for f in verify(change, drifted))
    halted = {**change, "state": "halted", "reason": "wave_not_acknowledged"}
    assert any("wave_not_acknowledged" in f for f in verify(halted, change["drift"]))
