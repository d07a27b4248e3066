"""Expiry classification (lifetime-relative) and the scan's per-device decisions. Pure."""

import datetime as dt

import pytest

from cert_lifecycle.expiry import (
    CRITICAL,
    EXPIRED,
    OK,
    RENEW,
    TAG,
    classify,
    decide,
    query_cutoff,
    reported_certificate,
    windows,
)
from cert_lifecycle.settings import Thresholds
from shared.iothub import Twin
from shared.serials import normalise_serial
from shared.times import parse_utc

NOW = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)
T = Thresholds()
TWO_YEARS, SIXTY_DAYS = 730, 60


def at(days_left: float, lifetime: int | None):
    not_after = NOW + dt.timedelta(days=days_left)
    not_before = not_after - dt.timedelta(days=lifetime) if lifetime else None
    return not_after, not_before


@pytest.mark.parametrize("days_left,lifetime,level", [
    (400, TWO_YEARS, OK), (120, TWO_YEARS, OK), (89, TWO_YEARS, RENEW), (45, TWO_YEARS, RENEW),
    (29, TWO_YEARS, CRITICAL), (5, TWO_YEARS, CRITICAL), (-1, TWO_YEARS, EXPIRED),
    (400, SIXTY_DAYS, OK), (120, SIXTY_DAYS, OK), (89, SIXTY_DAYS, OK), (45, SIXTY_DAYS, OK), (29, SIXTY_DAYS, OK),
    (19, SIXTY_DAYS, RENEW), (5, SIXTY_DAYS, CRITICAL), (-1, SIXTY_DAYS, EXPIRED),
    (89, None, RENEW), (29, None, CRITICAL), (91, None, OK), (0, TWO_YEARS, EXPIRED),
])
def test_classification_is_lifetime_relative(days_left, lifetime, level):
    not_after, not_before = at(days_left, lifetime)
    assert classify(not_after, NOW, T, not_before) == level


def test_a_short_lived_certificate_is_not_flagged_the_day_it_is_issued():
    not_after, not_before = at(SIXTY_DAYS, SIXTY_DAYS)
    assert classify(not_after, NOW, T, not_before) == OK
    assert windows(T, dt.timedelta(days=60)) == (dt.timedelta(days=20), dt.timedelta(days=6))
    assert windows(T, dt.timedelta(days=730)) == (dt.timedelta(days=90), dt.timedelta(days=30))


def test_every_window_is_inside_the_query_cutoff():
    cutoff = query_cutoff(NOW, T)
    assert cutoff == "2027-02-21T06:00:00Z"
    for lifetime in (1, 30, 60, 365, 730, 3650, None):
        renew, critical = windows(T, dt.timedelta(days=lifetime) if lifetime else None)
        assert critical <= renew <= dt.timedelta(days=T.renew_days)


def test_reported_certificate_parsing_is_strict_but_tolerant_of_formats():
    cert = reported_certificate({"certificate": {"serialNumber": "0a:bc:01", "notAfter": "2027-01-15T00:00:00Z",
                                                 "notBefore": "2025-01-15T00:00:00+00:00"}})
    assert cert.serial_number == "ABC01"
    assert cert.not_before == dt.datetime(2025, 1, 15, tzinfo=dt.UTC)
    for bad in [None, {}, {"certificate": "x"}, {"certificate": {"serialNumber": "zz", "notAfter": "2027-01-01"}},
                {"certificate": {"serialNumber": "01", "notAfter": "next year"}},
                {"certificate": {"serialNumber": "01" * 30, "notAfter": "2027-01-01T00:00:00Z"}}]:
        assert reported_certificate(bad) is None
    assert parse_utc("2027-01-15") == dt.datetime(2027, 1, 15, tzinfo=dt.UTC)
    assert normalise_serial(12) is None


def twin(days_left, lifetime=TWO_YEARS, tag=None, serial="01AB", device_id="sensor-temp-FAC03-SN1"):
    not_after, not_before = at(days_left, lifetime)
    reported = {"certificate": {"serialNumber": serial, "notAfter": not_after.isoformat(),
                                "notBefore": not_before.isoformat()}}
    return Twin(device_id, "hub-1", "etag-1", {TAG: tag} if tag else {}, reported, {})


def test_a_device_entering_renew_is_queued_notified_and_tagged():
    decision = decide(twin(60), NOW, T)
    assert (decision.level, decision.queue, decision.notify, decision.facility) == (RENEW, True, True, "FAC03")
    assert decision.tag_patch["state"] == "queued" and decision.tag_patch["serialNumber"] == "1AB"
    assert decision.tag_patch["notifiedOn"] == "2026-11-23" and decision.tag_patch["requestId"] is None


def test_same_level_same_certificate_is_not_queued_again():
    tag = {"state": "requested", "level": RENEW, "serialNumber": "1AB", "notifiedOn": "2026-11-20"}
    decision = decide(twin(60, tag=tag), NOW, T)
    assert (decision.queue, decision.notify, decision.tag_patch) == (False, False, None)


def test_escalation_is_queued_again_without_touching_the_renewal_state():
    tag = {"state": "requested", "level": RENEW, "serialNumber": "1AB", "requestId": "r1"}
    decision = decide(twin(29, tag=tag), NOW, T)
    assert (decision.level, decision.queue, decision.notify) == (CRITICAL, True, True)
    assert "state" not in decision.tag_patch and "requestId" not in decision.tag_patch


def test_critical_devices_are_reminded_once_a_day():
    tag = {"state": "requested", "level": CRITICAL, "serialNumber": "1AB", "notifiedOn": "2026-11-22"}
    decision = decide(twin(20, tag=tag), NOW, T)
    assert (decision.queue, decision.notify) == (False, True)
    again = decide(twin(20, tag={**tag, "notifiedOn": "2026-11-23"}), NOW, T)
    assert (again.queue, again.notify) == (False, False)


def test_a_new_certificate_starts_a_new_cycle_and_clears_the_last_one():
    tag = {"state": "closed", "level": CRITICAL, "serialNumber": "99", "requestId": "old", "newSerialNumber": "1AB"}
    decision = decide(twin(10, lifetime=SIXTY_DAYS, tag=tag), NOW, T)
    assert decision.queue and decision.tag_patch["state"] == "queued"
    assert decision.tag_patch["requestId"] is None and decision.tag_patch["newSerialNumber"] is None


def test_devices_without_a_readable_certificate_are_not_decided():
    assert decide(Twin("sensor-temp-FAC03-SN1", "h", None, {}, {}, {}), NOW, T) is None
    assert decide(twin(400), NOW, T).queue is False
    assert decide(twin(10, device_id="filler-1"), NOW, T).facility is None


def twin_with_activity(days_left: float, last_activity: str | None) -> Twin:
    not_after = NOW + dt.timedelta(days=days_left)
    doc = {"deviceId": "sensor-temp-FAC03-S1", "etag": "1", "tags": {},
           "properties": {"reported": {"certificate": {"serialNumber": "AB",
                                                       "notAfter": not_after.strftime("%Y-%m-%dT%H:%M:%SZ")}}}}
    if last_activity is not None:
        doc["lastActivityTime"] = last_activity
    return Twin.from_json("hub", doc)


@pytest.mark.parametrize("days_left,last_activity,stranded", [
    (-3, "2026-11-19T06:00:00Z", True),  # expired, silent for four days: cannot renew by itself
    (-3, "0001-01-01T00:00:00Z", True),  # IoT Hub's "never connected"
    (-3, None, True),
    (-3, "2026-11-23T05:00:00Z", False),  # expired but active an hour ago: not (yet) offline
    (5, "2026-11-01T06:00:00Z", False),  # silent but not expired: it can still renew once it is back
])
def test_an_expired_sensor_without_recent_activity_is_stranded(days_left, last_activity, stranded):
    decision = decide(twin_with_activity(days_left, last_activity), NOW, T)
    assert decision.stranded is stranded


def test_a_stranded_sensor_s_digest_carries_the_re_onboarding_steps():
    from cert_lifecycle.alerts import build_digests, email_content
    from shared.facilities import Facility

    stranded = decide(twin_with_activity(-3, "2026-11-19T06:00:00Z"), NOW, T)
    online = decide(twin_with_activity(-1, "2026-11-23T05:30:00Z"), NOW, T)
    online = type(online)(**{**online.__dict__, "device_id": "sensor-temp-FAC03-S2"})
    facility = Facility("FAC03", "Reno Machining", "west", "hub", "manager@example.com", True)
    [digest] = build_digests([stranded, online], {"FAC03": facility}, NOW, None, "scan1")
    assert digest.message["stranded"] == 1
    assert [d["stranded"] for d in digest.message["devices"]] == [True, False]
    text = email_content(digest)["plainText"]
    assert "OFFLINE since 2026-11-19T06:00:00Z" in text and "onboarding certs reissue" in text
    [healthy] = build_digests([online], {"FAC03": facility}, NOW, None, "scan1")
    assert "reissue" not in email_content(healthy)["plainText"]
