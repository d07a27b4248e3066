"""Renewal completes through DPS (docs/contracts.md 7): the webhook records on the certificate register when DPS
first provisions a device with a certificate this product issued to it; nothing else moves the register."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.certificates import CertificateRecord, CertificateRegister
from tests.allocation_harness import build_webhook, fill
from tests.contract.test_dps_allocation_contract import RID, fixture
from tests.pki_helpers import der_b64


@pytest.fixture
def webhook(tmp_path, monkeypatch):
    return build_webhook(tmp_path, monkeypatch)


def on_record(webhook, cert, device_id: str = RID) -> CertificateRegister:
    register = CertificateRegister(webhook.db)
    register.add_certificate(CertificateRecord(cert.issuer.rfc4514_string(), format(cert.serial_number, "X"),
                                               device_id, cert.not_valid_before_utc, cert.not_valid_after_utc,
                                               "active"))
    return register


def provision(webhook, cert, name: str = "x509-reprovision.json") -> dict:
    status, body = webhook.post(fill(fixture(name), DEVICE_CERT=der_b64(cert)))
    assert status == 200, body
    return body


def test_the_first_provisioning_with_a_renewed_certificate_is_recorded_once(webhook):
    old, new = webhook.ca.issue(RID), webhook.ca.issue(RID)
    register = on_record(webhook, old)
    on_record(webhook, new)
    provision(webhook, old, "x509-group.json")
    assert register.provisioned_at(RID, format(new.serial_number, "X")) is None
    provision(webhook, new)
    first = register.provisioned_at(RID, format(new.serial_number, "X"))
    assert first is not None and abs(first - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    provision(webhook, new)  # DPS retries, the device provisions again: the first moment stays
    assert register.provisioned_at(RID, format(new.serial_number, "X")) == first
    assert register.provisioned_at(RID, format(old.serial_number, "X")) is not None
    details = [row["details"] for row in webhook.audit_rows()]
    assert '"reprovisioning": true' in details[-1] and '"twinKept": true' in details[-1]


def test_a_certificate_on_record_for_another_device_is_not_marked_for_this_one(webhook):
    cert = webhook.ca.issue(RID)
    register = on_record(webhook, cert, device_id="sensor-temp-FAC03-OTHER1")
    provision(webhook, cert)
    assert register.provisioned_at("sensor-temp-FAC03-OTHER1", format(cert.serial_number, "X")) is None
    assert register.provisioned_at(RID, format(cert.serial_number, "X")) is None


def test_a_certificate_not_issued_by_this_product_is_allocated_and_leaves_the_register_alone(webhook):
    cert = webhook.ca.issue(RID)
    provision(webhook, cert)
    assert webhook.db.fetch_all("SELECT serial_number FROM certificates") == []
