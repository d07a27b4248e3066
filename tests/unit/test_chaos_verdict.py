"""`make chaos` exits non-zero when any of its conditions fails (local/chaos.py verdict, a pure function)."""

from __future__ import annotations

import pytest

from local.chaos import Evidence, verdict

REVOKED, STRANGER = "sensor-temp-FAC01-SN00000001", "sensor-temp-FAC92-SN00000001"


def passing(**changes) -> Evidence:
    """A run that passes: every sensor configured but the two incidents, refused with their reasons; every event
    delivered; one dead-lettered with its reason and found in the container."""
    evidence = Evidence(
        outcomes=[("sensor-flow-FAC01-SN1", "configured", None), ("sensor-press-FAC02-SN2", "configured", None),
                  (REVOKED, "refused", "enrollment_disabled"), (STRANGER, "refused", "unknown_facility")],
        expected_refusals={REVOKED: "enrollment_disabled", STRANGER: "unknown_facility"},
        pending_deliveries={"iothub-west-local": {"delivery": 0, "deadLetter": 0}},
        dead_lettered=1, dead_letter_blobs=1, power_on_s=35.0,
        chaos_done={"hub stopped": 1.0, "host killed": 2.0, "host back": 10.0, "hub continued": 31.0})
    for name, value in changes.items():
        setattr(evidence, name, value)
    return evidence


def test_a_clean_run_passes_with_nothing_lost():
    assert verdict(passing()) == ([], [])


def test_a_sensor_never_configured_is_lost_and_fails_the_run():
    evidence = passing()
    evidence.outcomes.append(("sensor-vib-FAC02-SN3", "refused", "device_creation_failed"))
    lost, failures = verdict(evidence)
    assert lost == ["sensor-vib-FAC02-SN3"]
    assert any("1 sensors lost" in f and "device_creation_failed" in f for f in failures)


def test_a_sensor_configured_too_late_is_lost():
    evidence = passing()
    evidence.outcomes.append(("sensor-vib-FAC02-SN3", "lost", "not configured in time"))
    assert verdict(evidence)[0] == ["sensor-vib-FAC02-SN3"]


def test_an_incident_refused_for_another_reason_is_lost():
    """The revoked sensor must be refused by DPS; refused by the webhook for a fault instead is not a reason a
    user can act on."""
    evidence = passing()
    evidence.outcomes[2] = (REVOKED, "refused", "dependency_unavailable")
    lost, failures = verdict(evidence)
    assert lost == [REVOKED] and failures


def test_a_revoked_certificate_allocated_fails_the_run():
    lost, failures = verdict(passing(revoked_allocations=["sensor-x at 2026-11-30 18:00 (revoked 17:59)"]))
    assert not lost
    assert failures == ["1 allocations of revoked certificates: sensor-x at 2026-11-30 18:00 (revoked 17:59)"]


@pytest.mark.parametrize("pending", [{"delivery": 2, "deadLetter": 0}, {"delivery": 0, "deadLetter": 1}])
def test_an_event_neither_delivered_nor_dead_lettered_fails_the_run(pending):
    _, failures = verdict(passing(pending_deliveries={"iothub-west-local": pending}))
    assert len(failures) == 1 and "neither delivered nor dead-lettered" in failures[0]


def test_a_dropped_event_fails_the_run():
    assert verdict(passing(dropped_events=1))[1] == ["1 events dropped without a dead letter"]


def test_a_dead_letter_missing_from_the_container_or_without_a_reason_fails_the_run():
    assert verdict(passing(dead_lettered=2))[1] == ["2 events dead-lettered, 1 found in the dead-letter container"]
    assert verdict(passing(dead_letters_without_reason=1))[1] == ["1 dead-lettered events without a reason"]


def test_a_wrong_twin_or_a_twin_written_twice_fails_the_run():
    assert verdict(passing(twins_wrong=3))[1] == ["3 twins differ from template (+) overrides"]
    assert verdict(passing(storm_rewritten=1))[1] == ["redelivery storm rewrote 1 twins"]


def test_the_scenarios_own_failures_fail_the_run_once_each():
    failures = ["2 twins differ from template (+) overrides", "certificate renewals incomplete: {...}",
                "1 sensors lost (powered on, never configured): sensor-vib-FAC02-SN3 lost"]
    evidence = passing(scenario_failures=failures, twins_wrong=2)
    evidence.outcomes.append(("sensor-vib-FAC02-SN3", "lost", "not configured in time"))
    lost, found = verdict(evidence)
    assert lost == ["sensor-vib-FAC02-SN3"]
    assert found[:2] == failures[:2]
    assert len(found) == 3 and found[2].startswith("1 sensors lost: sensor-vib-FAC02-SN3")


def test_a_configuration_written_again_after_the_sensor_applied_it_fails_the_run():
    rewritten = ["sensor-flow-FAC01-SN1: desired v4, applied v3"]
    assert verdict(passing(configurations_rewritten=rewritten))[1] == [
        "1 configurations written again after the sensor applied them: sensor-flow-FAC01-SN1: desired v4, applied v3"]


@pytest.mark.parametrize("done, missing", [
    ({"hub stopped": 1.0, "host back": 10.0, "hub continued": 31.0}, "host killed"),
    ({"hub stopped": 1.0, "host killed": 40.0, "host back": 45.0, "hub continued": 31.0}, "host killed"),
    ({"host killed": 2.0, "host back": 10.0}, "hub stopped"),
    ({"hub stopped": 1.0, "host killed": 2.0, "hub continued": 31.0}, "host back"),
])
def test_a_run_whose_host_kill_or_hub_outage_missed_the_rollout_fails(done, missing):
    """The faults must hit the rollout itself: a kill after the last sensor was configured proves nothing."""
    _, failures = verdict(passing(chaos_done=done))
    assert any(missing in f for f in failures)
