"""The renewal collector supersedes only certificates this product issued to that device: a reported old serial
that is not on record, or is another device's, is skipped and the skip audited (never revoked by guessing its CA)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from cert_lifecycle.expiry import TAG
from cert_lifecycle.records import CertificateRecords
from cert_lifecycle.renewal import RenewalService
from cert_lifecycle.revocation import RevocationResult
from cert_lifecycle.settings import LifecycleSettings
from local.seed.seed import SCHEMA, schema_statements
from shared.certificates import CertificateRecord
from shared.sql import Database
from tests.unit.test_cert_scan import HUB, NOW, FakeAudit, FakeHubs

WEST = SimpleNamespace(name="intermediate-ca-west", subject="CN=West")
DEVICE = "sensor-temp-FAC01-A"


class Cas:
    def resolve(self, issuer):
        assert issuer in (WEST.name, WEST.subject)
        return WEST

    def by_region(self, region):
        raise AssertionError("a CA must not be guessed from the region")


class Revoker:
    def __init__(self, unpublished=None):
        self.calls: list[tuple[list, str]] = []
        self.unpublished = unpublished or {}

    def revoke_targets(self, targets, reason, revoked_by):
        self.calls.append(([(t.serial_number, t.device_id, t.on_record) for t in targets], reason))
        return RevocationResult(unpublished=dict(self.unpublished))


@pytest.fixture
def records(tmp_path):
    db = Database(f"Driver=SQLite3;Database={tmp_path / 'renewal.db'}")
    for statement in schema_statements(SCHEMA.read_text()):
        db.execute(statement)
    yield CertificateRecords(db)
    db.close()


def on_record(records, device_id: str, serial: str, status: str = "active") -> None:
    records.add_certificate(CertificateRecord(WEST.subject, serial, device_id, NOW - dt.timedelta(days=700),
                                              NOW + dt.timedelta(days=30), status))


def completed_renewal(hubs: FakeHubs, old: str, new: str) -> None:
    hubs.add(DEVICE, 700, serial=new, tags={TAG: {
        "state": "completed", "requestId": "r1", "serialNumber": old, "newSerialNumber": new,
        "revokeAfter": (NOW - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}})


def collector(hubs, records, revoker, audit):
    return RenewalService(hubs, [HUB], issuer=None, cas=Cas(), revoker=revoker, records=records, audit=audit,
                          settings=LifecycleSettings(), now=lambda: NOW)


def test_the_devices_other_active_certificates_are_superseded_and_the_renewal_closed(records):
    on_record(records, DEVICE, "AA01")
    on_record(records, DEVICE, "BB02")
    hubs, revoker, audit = FakeHubs(), Revoker(), FakeAudit()
    completed_renewal(hubs, "AA01", "BB02")
    report = collector(hubs, records, revoker, audit).collect()
    assert revoker.calls == [([("AA01", DEVICE, True)], "superseded")]
    assert report.closed == [DEVICE] and report.failures == []


@pytest.mark.parametrize("owner,detail", [
    (None, "not on record (not issued by this product)"),
    ("sensor-temp-FAC01-OTHER", "on record for another device"),
])
def test_a_reported_old_serial_not_on_record_for_the_device_is_skipped_and_audited(records, owner, detail):
    on_record(records, DEVICE, "BB02")
    if owner:
        on_record(records, owner, "BEEF")
    hubs, revoker, audit = FakeHubs(), Revoker(), FakeAudit()
    completed_renewal(hubs, "BEEF", "BB02")
    report = collector(hubs, records, revoker, audit).collect()
    assert revoker.calls == []  # nothing to supersede: no revocation at all, no CRL
    skipped = [fields for action, fields in audit.rows if action == "renewal_supersede_skipped"]
    assert len(skipped) == 1 and skipped[0]["serial_number"] == "BEEF"
    assert skipped[0]["reason_code"] == "superseded_not_on_record" and skipped[0]["details"]["detail"] == detail
    assert report.closed == [DEVICE]
    if owner:
        assert records.certificates_with_serial("BEEF")[0].status == "active"


def test_an_old_serial_already_superseded_on_record_is_not_a_skip(records):
    on_record(records, DEVICE, "AA01", status="superseded")
    on_record(records, DEVICE, "BB02")
    hubs, revoker, audit = FakeHubs(), Revoker(), FakeAudit()
    completed_renewal(hubs, "AA01", "BB02")
    collector(hubs, records, revoker, audit).collect()
    assert revoker.calls == [] and not [a for a, _ in audit.rows if a == "renewal_supersede_skipped"]


def test_an_unpublished_crl_still_closes_the_renewal_and_is_reported(records):
    on_record(records, DEVICE, "AA01")
    on_record(records, DEVICE, "BB02")
    hubs, audit = FakeHubs(), FakeAudit()
    completed_renewal(hubs, "AA01", "BB02")
    report = collector(hubs, records, Revoker({WEST.name: "dependency_unavailable"}), audit).collect()
    assert report.closed == [DEVICE]
    assert report.failures == ["superseded revocations recorded, CRL of intermediate-ca-west not published yet "
                               "(dependency_unavailable)"]


def issued_renewal(hubs: FakeHubs, old: str, new: str, reported: str) -> None:
    hubs.add(DEVICE, 700, serial=reported, tags={TAG: {
        "state": "issued", "requestId": "r1", "serialNumber": old, "newSerialNumber": new}})


def test_a_renewal_completes_only_once_dps_provisioned_the_device_with_its_new_certificate(records):
    """The device's word (its reported certificate) is not enough: IoT Hub locks it out until it re-provisions."""
    on_record(records, DEVICE, "AA01")
    on_record(records, DEVICE, "BB02")
    hubs, revoker, audit = FakeHubs(), Revoker(), FakeAudit()
    issued_renewal(hubs, "AA01", "BB02", reported="BB02")
    service = collector(hubs, records, revoker, audit)
    report = service.collect()
    assert report.completed == [] and report.awaiting_reprovisioning == [DEVICE] and revoker.calls == []
    assert hubs.twins[DEVICE]["tags"][TAG]["state"] == "issued"

    assert records.mark_provisioned(WEST.subject, "BB02", DEVICE, NOW - dt.timedelta(minutes=5))
    report = service.collect()
    assert report.completed == [DEVICE] and report.awaiting_reprovisioning == []
    tags = hubs.twins[DEVICE]["tags"]
    assert tags[TAG]["state"] == "completed"
    assert tags[TAG]["reprovisionedAt"] == (NOW - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert tags["certificate"] == {"issuer": WEST.name, "serialNumber": "BB02",
                                   "notBefore": (NOW - dt.timedelta(days=700)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                   "notAfter": (NOW + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert revoker.calls == []  # superseded only after the grace period (24 h by default)


def test_a_sighting_of_another_devices_certificate_does_not_complete_a_renewal(records):
    on_record(records, DEVICE, "AA01")
    on_record(records, "sensor-temp-FAC01-OTHER", "BB02")
    hubs, revoker, audit = FakeHubs(), Revoker(), FakeAudit()
    issued_renewal(hubs, "AA01", "BB02", reported="BB02")
    assert not records.mark_provisioned(WEST.subject, "BB02", DEVICE, NOW)
    records.mark_provisioned(WEST.subject, "BB02", "sensor-temp-FAC01-OTHER", NOW)
    report = collector(hubs, records, revoker, audit).collect()
    assert report.completed == [] and report.awaiting_reprovisioning == [DEVICE]


def test_another_writers_change_to_the_twin_does_not_put_a_renewal_step_off_to_the_next_run(records):
    """The funnel or a configuration rollout writes the same twin's tags meanwhile (a 412 on the renewal's
    conditional write): the collector reads the twin again and completes the step in the same run."""
    on_record(records, DEVICE, "AA01")
    on_record(records, DEVICE, "BB02")
    hubs, revoker, audit = FakeHubs(), Revoker(), FakeAudit()
    issued_renewal(hubs, "AA01", "BB02", reported="BB02")
    records.mark_provisioned(WEST.subject, "BB02", DEVICE, NOW)
    hubs.conflict_once.add(DEVICE)
    report = collector(hubs, records, revoker, audit).collect()
    assert report.completed == [DEVICE] and report.failures == []
    assert hubs.twins[DEVICE]["tags"][TAG]["state"] == "completed"
