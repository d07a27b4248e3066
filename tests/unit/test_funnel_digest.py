"""Stuck-sensor digests: one per facility and stage, to the manager, with the technician's checks for that stage."""

from __future__ import annotations

from funnel.digest import StuckSensor, build_digests, email_content
from shared.facilities import Facility

FAC01 = Facility("FAC01", "Plant One", "west", "hub1", "manager1@example.com", True)


def sensor(n: int, stage: str, facility: str | None = "FAC01", reason: str | None = None) -> StuckSensor:
    return StuckSensor(f"sensor-temp-FAC01-SN{n}", "hub1", facility, stage, f"2026-11-30T12:00:0{n}Z", reason)


def test_one_digest_per_facility_and_stage_to_the_manager_oldest_first():
    digests = build_digests([sensor(3, "acknowledged"), sensor(1, "acknowledged"), sensor(2, "configured")],
                            {"FAC01": FAC01}, "2026-11-30", "ops@example.com")
    assert [(d.facility, d.stage, d.to) for d in digests] == [
        ("FAC01", "acknowledged", ("manager1@example.com",)), ("FAC01", "configured", ("manager1@example.com",))]
    silent = digests[0].message
    assert silent["count"] == 2 and [d["deviceId"] for d in silent["devices"]] == [
        "sensor-temp-FAC01-SN1", "sensor-temp-FAC01-SN3"]
    assert silent["id"] == "2026-11-30:FAC01:acknowledged"


def test_the_mail_tells_a_technician_what_to_check_at_that_stage():
    [silent] = build_digests([sensor(1, "acknowledged")], {"FAC01": FAC01}, "2026-11-30", None)
    text = email_content(silent)["plainText"]
    assert "sent no telemetry" in text and "8883" in text and "Wrong plant" in text
    assert "sensor-temp-FAC01-SN1: acknowledged since 2026-11-30T12:00:01Z, hub hub1" in text
    [unapplied] = build_digests([sensor(1, "configured")], {"FAC01": FAC01}, "2026-11-30", None)
    assert "Power" in email_content(unapplied)["plainText"]


def test_a_twin_setup_failure_reason_is_in_the_digest():
    [failed] = build_digests([sensor(1, "created", reason="unknown_template")], {"FAC01": FAC01}, "2026-11-30", None)
    assert "twin setup failed: unknown_template" in email_content(failed)["plainText"]


def test_a_facility_sql_does_not_know_goes_to_the_fallback_address():
    [digest] = build_digests([sensor(1, "acknowledged", facility="FAC99")], {"FAC99": None}, "2026-11-30",
                             "ops@example.com")
    assert digest.to == ("ops@example.com",) and digest.message["facilityName"] is None
