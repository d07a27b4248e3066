"""Revocation: the request forms (single and bulk), and the Revoker's steps over fakes: one CRL per CA, a CRL that
cannot be published keeps the revocation, superseded only for certificates on record, bounded device disabling."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest

from cert_lifecycle import revocation
from cert_lifecycle.records import RevocationRecord
from cert_lifecycle.revocation import (
    MAX_BODY_BYTES,
    MAX_LIST,
    RevocationRequest,
    RevocationResult,
    Revoker,
    Target,
    certificates_by_ca,
    parse_revocation_request,
    unique_targets,
)
from shared.errors import OnboardingError

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
WEST = SimpleNamespace(name="intermediate-ca-west", subject="CN=West")
EAST = SimpleNamespace(name="intermediate-ca-east", subject="CN=East")


def parse(body) -> RevocationRequest:
    return parse_revocation_request(json.dumps(body).encode())


def refused(body) -> OnboardingError:
    with pytest.raises(OnboardingError) as error:
        parse_revocation_request(body if isinstance(body, bytes) else json.dumps(body).encode())
    return error.value


# -- the request forms -----------------------------------------------------------------------------------------
def test_the_single_forms_parse_as_before():
    assert parse({"serialNumber": "0a:bc", "issuer": "intermediate-ca-west", "reason": "keyCompromise"}) == \
        RevocationRequest("keyCompromise", "admin", "ABC", "intermediate-ca-west")
    request = parse({"deviceId": "sensor-temp-FAC03-SN1"})
    assert (request.device_id, request.reason, request.bulk) == ("sensor-temp-FAC03-SN1", "unspecified", False)


def test_the_bulk_forms_normalise_validate_and_drop_duplicates():
    request = parse({"serialNumbers": ["0a", "A", "1f"], "issuer": "intermediate-ca-west", "revokedBy": "soc"})
    assert (request.serial_numbers, request.issuer, request.bulk) == (("A", "1F"), "intermediate-ca-west", True)
    request = parse({"deviceIds": ["sensor-temp-FAC03-SN1", "sensor-vib-FAC07-A"], "facility": "FAC03",
                     "reason": "cessationOfOperation"})
    assert request.device_ids == ("sensor-temp-FAC03-SN1", "sensor-vib-FAC07-A") and request.facility == "FAC03"


@pytest.mark.parametrize("body,code", [
    ({"serialNumber": "AB", "serialNumbers": ["CD"]}, "invalid_request"),
    ({"deviceId": "sensor-temp-FAC03-SN1", "facility": "FAC03"}, "invalid_request"),
    ({"deviceIds": ["sensor-temp-FAC03-SN1"], "issuer": "intermediate-ca-west"}, "invalid_request"),
    ({"serialNumbers": []}, "invalid_request"),
    ({"serialNumbers": "AB"}, "invalid_request"),
    ({"serialNumbers": ["AB", "xyz"]}, "invalid_serial_number"),
    ({"deviceIds": ["sensor-temp-FAC03-SN1", "not-a-device"]}, "invalid_registration_id"),
    ({"facility": "FAC%"}, "invalid_request"),
    ({"facility": "fac03"}, "invalid_request"),
    ({"facility": ["FAC03"]}, "invalid_request"),
    ({"reason": "keyCompromise"}, "invalid_request"),
    ({"serialNumbers": ["AB"], "reason": "cACompromise"}, "invalid_revocation_reason"),
])
def test_bad_bulk_requests_are_refused_with_a_code(body, code):
    assert refused(body).code == code


def test_a_list_above_the_cap_is_refused_clearly():
    error = refused({"serialNumbers": [format(n, "X") for n in range(1, MAX_LIST + 2)]})
    assert (error.code, error.status) == ("too_many_certificates", 413)
    assert f"at most {MAX_LIST}" in error.detail
    assert len(parse({"serialNumbers": [format(n, "X") for n in range(1, MAX_LIST + 1)]}).serial_numbers) == MAX_LIST


def test_the_body_limit_leaves_room_for_a_full_list_of_long_device_ids():
    body = {"deviceIds": [f"sensor-temp-FAC03-{n:032d}" for n in range(MAX_LIST)], "revokedBy": "x" * 100}
    assert len(json.dumps(body)) < MAX_BODY_BYTES
    assert refused(b" " * (MAX_BODY_BYTES + 1)).code == "request_too_large"


# -- pure helpers ----------------------------------------------------------------------------------------------
def test_targets_are_unique_per_ca_and_serial_and_counted_per_ca():
    targets = [Target(WEST, "A", "d1", True), Target(EAST, "A", "d2", True), Target(WEST, "A", None, False),
               Target(WEST, "B", "d1", True)]
    unique = unique_targets(targets)
    assert unique == [targets[0], targets[1], targets[3]]
    assert certificates_by_ca(unique) == {"intermediate-ca-east": 1, "intermediate-ca-west": 2}


def test_the_result_summarises_and_names_unpublished_cas():
    result = RevocationResult(revoked=[{"issuer": "intermediate-ca-west", "changed": True},
                                       {"issuer": "intermediate-ca-west", "changed": False}], newly_revoked=1)
    assert result.summary() == {"certificates": 2, "newlyRevoked": 1, "unchanged": 1,
                                "byCa": {"intermediate-ca-west": 2}}
    assert result.unpublished_error() is None
    result.unpublished["intermediate-ca-west"] = "dependency_unavailable"
    error = result.unpublished_error()
    assert (error.code, error.status, error.detail) == ("revocation_not_published", 503,
                                                       "intermediate-ca-west: dependency_unavailable")


# -- the Revoker over fakes ------------------------------------------------------------------------------------
class Records:
    def __init__(self):
        self.rows: dict[tuple[str, str], RevocationRecord] = {}
        self.statuses: dict[tuple[str, str], str] = {}

    def add_revocations(self, issuer, serials, reason, at, by):
        existing = {s: self.rows[issuer, s] for s in serials if (issuer, s) in self.rows}
        new = {s for s in serials if s not in existing}
        self.rows.update({(issuer, s): RevocationRecord(s, reason, at, None, by) for s in new})
        return new, existing

    def set_statuses(self, issuer, serials, status):
        self.statuses.update({(issuer, s): status for s in serials})
        return len(serials)


class Publisher:
    def __init__(self, failing=()):
        self.calls: list[str] = []
        self.failing = set(failing)
        self.number = 10

    def publish(self, authority, actor="system"):
        self.calls.append(authority.name)
        if authority.name in self.failing:
            raise OnboardingError("dependency_unavailable", "Key Vault set_secret: ConnectionError")
        self.number += 1
        return SimpleNamespace(number=self.number, changed=True)


class Audit:
    def __init__(self):
        self.rows: list[tuple[str, dict]] = []

    def certificate_event(self, action, **fields):
        self.rows.append((action, fields))
        return True


class Hubs:
    def __init__(self, clock):
        self.clock = clock
        self.calls: list[tuple[str, str]] = []

    def set_device_status(self, host, device_id, status, reason):
        self.calls.append((host, device_id))
        self.clock[0] += 10  # each call takes 10 s of the budget
        return host == "hub-a"


def revoker(publisher=None, hubs=None, budget=90.0, clock=None):
    records, audit, alerts, publisher = Records(), Audit(), [], publisher or Publisher()
    clock = clock if clock is not None else [0.0]
    subject = Revoker(None, records, publisher, audit, alerts.append, hubs, ["hub-a", "hub-b"],
                      now=lambda: NOW, disable_budget_s=budget, monotonic=lambda: clock[0])
    return SimpleNamespace(revoker=subject, records=records, audit=audit, alerts=alerts, publisher=publisher)


def test_one_crl_per_affected_ca_however_many_certificates():
    t = revoker()
    targets = [Target(WEST, f"{n:X}", f"sensor-temp-FAC03-N{n}", True) for n in range(1, 6)]
    targets += [Target(EAST, "E1", "sensor-temp-FAC09-E1", True)]
    result = t.revoker.revoke_targets(targets, "keyCompromise", "soc")
    assert t.publisher.calls == ["intermediate-ca-east", "intermediate-ca-west"]
    assert result.summary()["newlyRevoked"] == 6 and result.crls == {"intermediate-ca-east": 11,
                                                                     "intermediate-ca-west": 12}
    assert set(t.records.statuses.values()) == {"revoked"}
    assert len(t.alerts) == 6 and [a for a, _ in t.audit.rows].count("revoked") == 6


def test_revoking_again_counts_as_unchanged_and_keeps_the_first_reason():
    t = revoker()
    target = Target(WEST, "A", "sensor-temp-FAC03-A", True)
    t.revoker.revoke_targets([target], "keyCompromise", "soc")
    t.publisher.calls.clear()
    again = t.revoker.revoke_targets([target], "superseded", "renewal")
    assert again.newly_revoked == 0 and again.revoked[0]["reason"] == "keyCompromise"
    assert t.records.statuses[WEST.subject, "A"] == "revoked"  # not turned into "superseded"
    assert len(t.alerts) == 1  # announced once


def test_an_unpublished_crl_keeps_the_revocation_announces_it_and_names_the_ca():
    t = revoker(Publisher(failing={"intermediate-ca-west"}))
    targets = [Target(WEST, "A", "sensor-temp-FAC03-A", True), Target(EAST, "E", "sensor-temp-FAC09-E", True)]
    result = t.revoker.revoke_targets(targets, "keyCompromise", "soc")
    assert result.unpublished == {"intermediate-ca-west": "dependency_unavailable"}
    assert result.crls == {"intermediate-ca-east": 11, "intermediate-ca-west": None}
    assert (WEST.subject, "A") in t.records.rows  # kept: the CRL refresh publishes it
    assert [a["crlPublished"] for a in t.alerts] == [False, True]
    assert result.unpublished_error().code == "revocation_not_published"


def test_superseded_is_refused_for_a_certificate_not_on_record_before_anything_is_written():
    t = revoker()
    with pytest.raises(OnboardingError) as error:
        t.revoker.revoke_targets([Target(WEST, "A", "d", True), Target(WEST, "F", None, False)], "superseded", "r")
    assert (error.value.code, error.value.status) == ("superseded_not_on_record", 409)
    assert t.records.rows == {} and t.publisher.calls == []


def test_superseded_revocations_are_neither_security_alerts_nor_disable_devices():
    clock = [0.0]
    hubs = Hubs(clock)
    t = revoker(hubs=hubs, clock=clock)
    t.revoker.revoke_targets([Target(WEST, "A", "sensor-temp-FAC03-A", True)], "superseded", "renewal")
    assert t.alerts == [] and hubs.calls == []


def test_disabling_stops_at_its_budget_and_lists_the_devices_left():
    clock = [0.0]
    hubs = Hubs(clock)
    t = revoker(hubs=hubs, budget=25, clock=clock)
    targets = [Target(WEST, f"{n:X}", f"sensor-temp-FAC03-D{n}", True) for n in range(1, 5)]
    result = t.revoker.revoke_targets(targets, "keyCompromise", "soc")
    # two hubs per device at 10 s each: D1 (20 s), D2 (40 s > 25 s budget checked before D3)
    assert result.disabled_on == {"sensor-temp-FAC03-D1": ["hub-a"], "sensor-temp-FAC03-D2": ["hub-a"]}
    assert result.not_disabled == ["sensor-temp-FAC03-D3", "sensor-temp-FAC03-D4"]
    assert any("revoke again" in w for w in result.warnings)
    assert result.newly_revoked == 4 and len(t.alerts) == 4  # the revocations themselves are all done


def test_progress_is_reported_per_ca_recorded_crl_published_and_devices_disabled(monkeypatch):
    monkeypatch.setattr(revocation, "DISABLE_PROGRESS_EVERY", 2)
    clock = [0.0]
    t = revoker(hubs=Hubs(clock), budget=1000, clock=clock)
    seen = []
    targets = [Target(WEST, f"{n:X}", f"sensor-temp-FAC03-P{n}", True) for n in range(1, 4)]
    targets.append(Target(EAST, "E", "sensor-temp-FAC09-E", True))
    t.revoker.revoke_targets(targets, "unspecified", "soc", progress=lambda *step: seen.append(step))
    assert seen == [("recorded", 3, 4), ("recorded", 4, 4), ("published", 1, 2), ("published", 2, 2),
                    ("disabled", 2, 4), ("disabled", 4, 4)]
    assert revocation.MAX_TARGETS >= MAX_LIST  # a full list of serials always fits


# -- revocation enforced at DPS (issue 13 item 4) --------------------------------------------------------------
class Dps:
    """DpsEnrollments.disallow_many over a fake DPS: per registration ID, disallowed now, already, or failing."""

    def __init__(self, already=(), failing=None, left_out=()):
        self.calls: list[tuple[list[tuple[str, str]], float]] = []
        self.already, self.failing, self.left_out = set(already), dict(failing or {}), set(left_out)

    def disallow_many(self, devices, deadline_s=60.0):
        from shared.dps import DisallowReport

        devices = list(devices)
        self.calls.append((devices, deadline_s))
        report = DisallowReport()
        for device_id, _pem in devices:
            if device_id in self.left_out:
                report.not_attempted.append(device_id)
            elif device_id in self.failing:
                report.failed[device_id] = self.failing[device_id]
            else:
                (report.unchanged if device_id in self.already else report.disallowed).append(device_id)
        return report


class RecordsWithPems(Records):
    def __init__(self, pems):
        super().__init__()
        self.pems = pems  # (issuer subject, serial) -> PEM
        self.asked: list[tuple[str, list[str]]] = []

    def certificate_pems(self, issuer, serials):
        self.asked.append((issuer, list(serials)))
        return {s: self.pems[issuer, s] for s in serials if (issuer, s) in self.pems}


def dps_revoker(dps, pems, deadline=60.0, factory=None):
    records, audit, alerts = RecordsWithPems(pems), Audit(), []
    subject = Revoker(None, records, Publisher(), audit, alerts.append, None, [], now=lambda: NOW,
                      dps=factory or (lambda: dps), dps_deadline_s=deadline)
    return SimpleNamespace(revoker=subject, records=records, audit=audit, dps=dps)


def pem(serial: str) -> str:
    return f"-----BEGIN CERTIFICATE-----\n{serial}\n-----END CERTIFICATE-----\n"


def test_a_revocation_for_cause_disallows_each_device_at_dps_with_its_revoked_certificate():
    dps = Dps()
    t = dps_revoker(dps, {(WEST.subject, "A"): pem("A"), (EAST.subject, "E"): pem("E")})
    targets = [Target(WEST, "A", "sensor-temp-FAC03-A", True), Target(EAST, "E", "sensor-temp-FAC09-E", True)]
    result = t.revoker.revoke_targets(targets, "keyCompromise", "soc")
    ((pinned, deadline),) = dps.calls
    assert sorted(pinned) == [("sensor-temp-FAC03-A", pem("A")), ("sensor-temp-FAC09-E", pem("E"))]
    assert deadline == 60.0
    assert sorted(result.disallowed_at_dps) == ["sensor-temp-FAC03-A", "sensor-temp-FAC09-E"]
    assert result.to_body()["disallowedAtDps"] == result.disallowed_at_dps and result.warnings == []
    rows = [fields for action, fields in t.audit.rows if action == "dps_disallowed"]
    assert sorted(r["device_id"] for r in rows) == ["sensor-temp-FAC03-A", "sensor-temp-FAC09-E"]
    assert all(r["reason_code"] == "keyCompromise" and r["actor"] == "soc" and r["details"]["changed"] for r in rows)
    assert {r["device_id"]: r["details"]["serialNumbers"] for r in rows}["sensor-temp-FAC03-A"] == ["A"]


@pytest.mark.parametrize("reason", ["unspecified", "keyCompromise", "cessationOfOperation", "affiliationChanged",
                                    "privilegeWithdrawn"])
def test_every_reason_but_superseded_disallows(reason):
    dps = Dps()
    t = dps_revoker(dps, {(WEST.subject, "A"): pem("A")})
    assert t.revoker.revoke_targets([Target(WEST, "A", "sensor-temp-FAC03-A", True)], reason, "soc") \
        .disallowed_at_dps == ["sensor-temp-FAC03-A"]


def test_superseded_leaves_dps_alone_and_so_does_an_app_without_dps():
    dps = Dps()
    t = dps_revoker(dps, {(WEST.subject, "A"): pem("A")})
    result = t.revoker.revoke_targets([Target(WEST, "A", "sensor-temp-FAC03-A", True)], "superseded", "renewal")
    assert dps.calls == [] and result.disallowed_at_dps == [] and t.records.asked == []
    # DPS not configured: the wiring hands the Revoker None (or no source at all); nothing is asked, nothing warned.
    for source in (lambda: None, None):
        records, audit = RecordsWithPems({(WEST.subject, "B"): pem("B")}), Audit()
        subject = Revoker(None, records, Publisher(), audit, lambda alert: None, None, [], now=lambda: NOW, dps=source)
        result = subject.revoke_targets([Target(WEST, "B", "sensor-temp-FAC03-B", True)], "keyCompromise", "soc")
        assert result.disallowed_at_dps == [] and result.warnings == [] and records.asked == []
        assert "dps_disallowed" not in [a for a, _ in audit.rows]


def test_certificates_not_on_record_failures_and_the_deadline_become_warnings():
    dps = Dps(already={"sensor-temp-FAC03-B"}, failing={"sensor-temp-FAC03-C": "DpsUnavailable: HTTP 503"},
              left_out={"sensor-temp-FAC03-D"})
    pems = {(WEST.subject, s): pem(s) for s in ("B", "C", "D")}  # "A" was issued before the register kept PEMs
    t = dps_revoker(dps, pems, deadline=5.0)
    targets = [Target(WEST, s, f"sensor-temp-FAC03-{s}", True) for s in ("A", "B", "C", "D")]
    targets.append(Target(WEST, "F", None, False))  # a serial not on record: no device to disallow
    result = t.revoker.revoke_targets(targets, "keyCompromise", "soc")
    ((pinned, deadline),) = dps.calls
    assert [device for device, _ in pinned] == ["sensor-temp-FAC03-B", "sensor-temp-FAC03-C", "sensor-temp-FAC03-D"]
    assert deadline == 5.0
    assert result.disallowed_at_dps == ["sensor-temp-FAC03-B"]  # already disallowed counts: the device is out
    rows = [fields for action, fields in t.audit.rows if action == "dps_disallowed"]
    assert [(r["device_id"], r["details"]["changed"]) for r in rows] == [("sensor-temp-FAC03-B", False)]
    text = " | ".join(result.warnings)
    assert "no certificate on record" in text and ": A" in text
    assert "sensor-temp-FAC03-C not disallowed at DPS (DpsUnavailable: HTTP 503)" in text
    assert "1 device(s) not disallowed at DPS within 5 s" in text and "sensor-temp-FAC03-D" in text
    assert result.newly_revoked == 5  # the revocations themselves are all done


def test_two_revoked_certificates_of_one_device_are_both_pinned():
    dps = Dps()
    t = dps_revoker(dps, {(WEST.subject, "A"): pem("A"), (WEST.subject, "B"): pem("B")})
    targets = [Target(WEST, "A", "sensor-temp-FAC03-X", True), Target(WEST, "B", "sensor-temp-FAC03-X", True)]
    result = t.revoker.revoke_targets(targets, "keyCompromise", "soc")
    ((pinned, _),) = dps.calls
    assert pinned == [("sensor-temp-FAC03-X", pem("A")), ("sensor-temp-FAC03-X", pem("B"))]
    assert result.disallowed_at_dps == ["sensor-temp-FAC03-X"]
    (row,) = [fields for action, fields in t.audit.rows if action == "dps_disallowed"]
    assert row["details"]["serialNumbers"] == ["A", "B"]


def test_a_malformed_dps_setting_is_a_warning_never_an_undone_revocation():
    from shared.config import SettingError

    def broken():
        raise SettingError("app setting DPS_SERVICE_HOSTNAME must be a host name (no scheme or path)")

    t = dps_revoker(None, {(WEST.subject, "A"): pem("A")}, factory=broken)
    result = t.revoker.revoke_targets([Target(WEST, "A", "sensor-temp-FAC03-A", True)], "keyCompromise", "soc")
    assert result.newly_revoked == 1 and result.disallowed_at_dps == []
    assert any("DPS_SERVICE_HOSTNAME" in w for w in result.warnings)


def test_an_unexpected_dps_failure_is_a_warning_never_a_500():
    class Broken(Dps):
        def disallow_many(self, devices, deadline_s=60.0):
            raise RuntimeError("transport exploded")

    t = dps_revoker(Broken(), {(WEST.subject, "A"): pem("A")})
    result = t.revoker.revoke_targets([Target(WEST, "A", "sensor-temp-FAC03-A", True)], "keyCompromise", "soc")
    assert result.newly_revoked == 1 and result.disallowed_at_dps == [] and result.crls
    assert result.warnings == ["not disallowed at DPS (RuntimeError): revoke the same serial numbers again to retry"]
