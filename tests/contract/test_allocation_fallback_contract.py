"""The webhook when DPS sends no certificate details: the register stands in only where it cannot be wrong. Over
the real handler, real SQL (SQLite ODBC) and real CRL verification (tests/allocation_harness.py)."""

from __future__ import annotations

import json

import pytest

from tests.allocation_harness import HUBS, build_webhook

RID = "sensor-temp-FAC03-SN482019"


@pytest.fixture
def webhook(tmp_path, monkeypatch):
    return build_webhook(tmp_path, monkeypatch)


def without_certificate() -> dict:
    return {"enrollmentGroup": {"enrollmentGroupId": "sensors-west", "attestation": {"type": "x509"}},
            "deviceRuntimeContext": {"registrationId": RID, "x509": {}}, "linkedHubs": list(HUBS)}


def on_record(webhook, status: str = "active", reason: str | None = None) -> str:
    """A certificate issued to RID, in the register (and in revocations when reason is given); its serial."""
    cert = webhook.ca.issue(RID)
    serial = format(cert.serial_number, "X")
    webhook.db.execute(
        "INSERT INTO certificates (issuer, serial_number, device_id, not_before, not_after, status) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [cert.issuer.rfc4514_string(), serial, RID, cert.not_valid_before_utc.replace(tzinfo=None),
         cert.not_valid_after_utc.replace(tzinfo=None), status])
    if reason:
        webhook.db.execute("INSERT INTO revocations (issuer, serial_number, reason, revoked_at, revoked_by) "
                           "VALUES (?, ?, ?, CURRENT_TIMESTAMP, 'test')",
                           [cert.issuer.rfc4514_string(), serial, reason])
    return serial


def last_audit(webhook) -> dict:
    row = webhook.audit_rows()[-1]
    return {**row, "details": json.loads(row["details"])}


def test_a_revoked_certificate_beside_a_renewed_active_one_is_not_allocated(webhook):
    revoked = on_record(webhook, "revoked", "keyCompromise")
    on_record(webhook)
    webhook.publish_crl(revoked=[int(revoked, 16)], number=2)  # the CRL does list A; DPS just did not say it was A
    status, body = webhook.post(without_certificate())
    assert (status, body["error"]["code"]) == (403, "revoked_certificate_outstanding")
    assert revoked in body["error"]["detail"]
    audit = last_audit(webhook)
    assert (audit["outcome"], audit["reason_code"]) == ("rejected", "revoked_certificate_outstanding")


def test_one_active_certificate_and_nothing_else_is_allocated_from_the_register(webhook):
    serial = on_record(webhook)
    status, body = webhook.post(without_certificate())
    assert status == 200 and body["initialTwin"]["tags"]["certificate"]["serialNumber"] == serial
    assert last_audit(webhook)["details"]["certificateSource"] == "register"


def test_during_a_renewal_the_active_certificate_is_allocated_unless_the_setting_refuses(webhook):
    on_record(webhook, "superseded", "superseded")
    active = on_record(webhook)
    status, body = webhook.post(without_certificate())
    assert status == 200 and body["initialTwin"]["tags"]["certificate"]["serialNumber"] == active
    assert last_audit(webhook)["details"]["certificateSource"] == "register-renewal"  # the residual risk, audited
    webhook.context.without_certificate_during_renewal = "refuse"
    status, body = webhook.post(without_certificate())
    assert (status, body["error"]["code"]) == (403, "superseded_certificate_outstanding")


def test_two_active_certificates_are_a_renewal_in_flight_allowed_or_refused_by_the_setting(webhook):
    on_record(webhook)
    on_record(webhook)
    status, body = webhook.post(without_certificate())
    assert status == 200, body
    webhook.context.without_certificate_during_renewal = "refuse"
    status, body = webhook.post(without_certificate())
    assert (status, body["error"]["code"]) == (409, "certificate_ambiguous")
    on_record(webhook)
    webhook.context.without_certificate_during_renewal = "allow"
    status, body = webhook.post(without_certificate())  # three active: no renewal explains that
    assert (status, body["error"]["code"]) == (409, "certificate_ambiguous")
