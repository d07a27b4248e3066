"""Every refusal of the webhook: its status, its catalogue code, its audit row, and no 500 for bad input."""

import datetime as dt
import json

import pytest

from tests.allocation_harness import HUBS, build_webhook
from tests.pki_helpers import NOW, der_b64, make_ca

RID = "sensor-temp-FAC03-SN482019"


@pytest.fixture
def webhook(tmp_path, monkeypatch):
    return build_webhook(tmp_path, monkeypatch)


def request_for(cert, rid=RID, **context) -> dict:
    ctx = {"registrationId": rid, "x509": {"clientCertificate": der_b64(cert)}, **context}
    return {"enrollmentGroup": {"enrollmentGroupId": "sensors-west", "attestation": {"type": "x509"}},
            "deviceRuntimeContext": ctx, "linkedHubs": list(HUBS)}


def test_revoked_certificate_is_refused_audited_and_alerted(webhook):
    cert = webhook.ca.issue(RID)
    assert webhook.post(request_for(cert))[0] == 200
    webhook.publish_crl(revoked=[cert.serial_number], number=2)
    status, body = webhook.post(request_for(cert))
    assert status == 403 and body["error"]["code"] == "certificate_revoked"
    rows = webhook.audit_rows()
    assert [(r["outcome"], r["reason_code"]) for r in rows] == [
        ("allocated", None), ("rejected", "certificate_revoked")]
    assert webhook.alerts.messages[0]["type"] == "revokedCertificatePresented"
    assert webhook.alerts.messages[0]["registrationId"] == RID
    other = webhook.ca.issue(RID)
    assert webhook.post(request_for(other))[0] == 200  # only that serial is revoked


@pytest.mark.parametrize("break_crl", [
    lambda hook: hook.crls.delete("intermediate-ca-west.crl"),
    lambda hook: hook.crls.put("intermediate-ca-west.crl", b"not a CRL"),
    lambda hook: hook.crls.put("intermediate-ca-west.crl", b"\x30\x00"),
    lambda hook: hook.publish_crl(key=make_ca().key, number=5),
    lambda hook: hook.publish_crl(this_update=NOW - dt.timedelta(days=9), next_update=NOW - dt.timedelta(days=2),
                                  number=5),
    lambda hook: setattr(hook.crls, "down", True),
])
def test_no_valid_crl_fails_closed_with_a_status_dps_retries(webhook, break_crl):
    break_crl(webhook)
    webhook.context.trust.invalidate()
    for _ in range(3):
        status, body = webhook.post(request_for(webhook.ca.issue(RID)))
        assert status == 503 and body["error"]["code"] == "crl_unavailable"
    assert webhook.last_headers["Retry-After"] == "5"  # DPS retries >= 429 (docs/contracts.md 1.3)


def test_certificate_from_an_unknown_ca_is_refused(webhook):
    stranger = make_ca("rogue", "west")
    status, body = webhook.post(request_for(stranger.issue(RID)))
    assert status == 403 and body["error"]["code"] == "unknown_issuer"


def test_certificate_claiming_our_issuer_name_but_signed_elsewhere_is_refused(webhook):
    impostor = make_ca("intermediate-ca-west", "west")  # same subject, other key
    status, body = webhook.post(request_for(impostor.issue(RID)))
    assert status == 403 and body["error"]["code"] == "unknown_issuer"


def test_cn_and_registration_id_must_agree(webhook):
    cert = webhook.ca.issue("sensor-temp-FAC03-SN000001")
    status, body = webhook.post(request_for(cert))
    assert status == 400 and body["error"]["code"] == "registration_id_mismatch"


@pytest.mark.parametrize("rid,status,code", [
    ("sensor-temp-FAC42-SN1", 404, "unknown_facility"),
    ("sensor-temp-FAC99-SN1", 403, "facility_inactive"),
])
def test_facility_must_exist_and_be_active(webhook, rid, status, code):
    got_status, body = webhook.post(request_for(webhook.ca.issue(rid), rid=rid))
    assert (got_status, body["error"]["code"]) == (status, code)


def test_full_preferred_hub_spills_over_in_region_then_across(webhook):
    cert = webhook.ca.issue(RID)
    webhook.device_counts["hub-west.azure-devices.net"] = 95
    assert webhook.post(request_for(cert))[1]["iotHubHostName"] == "hub-west2.azure-devices.net"
    webhook.device_counts["hub-west.azure-devices.net"] = 100
    webhook.device_counts["hub-west2.azure-devices.net"] = 100
    status, body = webhook.post(request_for(cert))
    assert status == 200 and body["initialTwin"]["tags"]["onboarding"]["crossRegion"] is True
    for hub in HUBS:
        webhook.device_counts[hub] = 100
    status, body = webhook.post(request_for(cert))
    assert status == 409 and body["error"]["code"] == "no_hub_capacity"


def test_no_certificate_details_falls_back_to_the_register_and_fails_closed(webhook):
    request = request_for(webhook.ca.issue(RID))
    request["deviceRuntimeContext"]["x509"] = {}
    status, body = webhook.post(request)
    assert status == 400 and body["error"]["code"] == "certificate_missing"
    cert = webhook.ca.issue(RID)
    webhook.db.execute(
        "INSERT INTO certificates (issuer, serial_number, device_id, not_before, not_after, status) "
        "VALUES (?, ?, ?, ?, ?, 'active')",
        [cert.issuer.rfc4514_string(), format(cert.serial_number, "X"), RID, cert.not_valid_before_utc.replace(
            tzinfo=None), cert.not_valid_after_utc.replace(tzinfo=None)])
    status, body = webhook.post(request)
    assert status == 200 and body["initialTwin"]["tags"]["certificate"]["serialNumber"] == format(
        cert.serial_number, "X")
    webhook.publish_crl(revoked=[cert.serial_number], number=3)
    assert webhook.post(request)[1]["error"]["code"] == "certificate_revoked"


def test_audit_failure_does_not_turn_a_refusal_into_an_allocation(webhook):
    webhook.db.execute("DROP TABLE provisioning_events")
    webhook.publish_crl(revoked=[1234], number=2)
    status, body = webhook.post(request_for(webhook.ca.issue(RID, serial=1234)))
    assert status == 403 and body["error"]["code"] == "certificate_revoked"


def test_unexpected_fault_is_a_500_without_internals(webhook, monkeypatch):
    def explode():
        raise RuntimeError("secret connection string xyz")

    monkeypatch.setattr(webhook.context.capacity, "snapshot", explode)
    status, body = webhook.post(request_for(webhook.ca.issue(RID)))
    assert status == 500
    assert body == {"error": {"code": "internal_error", "message": body["error"]["message"]}}
    assert "xyz" not in json.dumps(body)


@pytest.mark.parametrize("raw", [
    b"", b"{", b"[]", b"x" * (1024 * 1024), json.dumps({"deviceRuntimeContext": None}).encode(),
    json.dumps(request_for(make_ca().issue(RID), rid="s" * 10_000)).encode(),
    json.dumps(request_for(make_ca().issue(RID), rid="sensor-temp-FAC03-1 OR 1=1")).encode(),
    json.dumps(request_for(make_ca().issue(RID), rid="sensor-temp-FAC03-\u2603")).encode(),
])
def test_bad_input_is_a_4xx_with_a_code(webhook, raw):
    status, body = webhook.post(raw)
    assert 400 <= status < 500
    assert body["error"]["code"] in {"invalid_request", "invalid_registration_id"}
    assert webhook.audit_rows()[-1]["outcome"] == "rejected"
