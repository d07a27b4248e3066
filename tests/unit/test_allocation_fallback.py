"""No trust from records: when DPS sends no certificate details, the register stands in only where it cannot be
wrong (allocation.decision.vouched_certificate), and the register answers with one statement (LEFT JOIN)."""

from __future__ import annotations

import datetime as dt

import pytest

from allocation.decision import (
    FROM_REGISTER,
    FROM_REGISTER_DURING_RENEWAL,
    AllocationContext,
    resolve_certificate,
    vouched_certificate,
)
from allocation.issued import issued_certificate
from allocation.request import AllocationRequest
from local.seed.seed import SCHEMA, schema_statements
from shared.certificates import CertificateRecord, CertificateRegister, CertificateStanding
from shared.errors import OnboardingError
from shared.identity import parse_device_id
from shared.sql import Database

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
CN = "sensor-temp-FAC03-SN482019"
WEST = "CN=Test Intermediate CA west,O=Test"


def cert(serial: str, status: str = "active", reason: str | None = None, days_left: float = 365,
         device_id: str = CN) -> CertificateStanding:
    not_after = NOW + dt.timedelta(days=days_left)
    return CertificateStanding(CertificateRecord(WEST, serial, device_id, not_after - dt.timedelta(days=730),
                                                 not_after, status), reason)


def vouch(*entries: CertificateStanding, during_renewal: str = "allow") -> tuple[str, str]:
    record, source = vouched_certificate(list(entries), NOW, during_renewal)
    return record.serial_number, source


def refusal(*entries: CertificateStanding, during_renewal: str = "allow") -> OnboardingError:
    with pytest.raises(OnboardingError) as refused:
        vouched_certificate(list(entries), NOW, during_renewal)
    return refused.value


# -- allocate --------------------------------------------------------------------------------------------------
def test_one_active_certificate_and_nothing_else_is_vouched_for():
    assert vouch(cert("B")) == ("B", FROM_REGISTER)


def test_expired_certificates_do_not_count_whatever_their_standing():
    expired = [cert("A", "revoked", "keyCompromise", days_left=-1),
               cert("C", "superseded", "superseded", days_left=-0.01), cert("D", days_left=-30)]
    assert vouch(cert("B"), *expired) == ("B", FROM_REGISTER)


# -- revoked for cause: refuse ----------------------------------------------------------------------------------
@pytest.mark.parametrize("reason", ["keyCompromise", "unspecified", "affiliationChanged", "cessationOfOperation",
                                    "privilegeWithdrawn"])
def test_an_unexpired_certificate_revoked_for_cause_refuses_even_with_an_active_one(reason):
    error = refusal(cert("B"), cert("A", "revoked", reason, days_left=1))
    assert (error.code, error.status) == ("revoked_certificate_outstanding", 403)
    assert "serial A" in error.detail


def test_the_revocation_row_wins_over_a_status_not_yet_updated():
    # A revocation is recorded first, then the status: between the two the row is what the CRL will list.
    assert refusal(cert("B"), cert("A", "active", "keyCompromise")).code == "revoked_certificate_outstanding"
    assert vouch(cert("B"), cert("A", "active", "superseded")) == ("B", FROM_REGISTER_DURING_RENEWAL)


@pytest.mark.parametrize("status", ["revoked", "suspended"])
def test_a_revoked_or_unknown_status_without_a_revocation_row_fails_closed(status):
    assert refusal(cert("B"), cert("A", status)).code == "revoked_certificate_outstanding"


def test_revoked_for_cause_is_refused_before_anything_else_is_considered():
    assert refusal(cert("A", "revoked", "keyCompromise")).code == "revoked_certificate_outstanding"
    assert refusal(cert("B"), cert("C"), cert("S", "superseded", "superseded"),
                   cert("A", "revoked", "keyCompromise")).code == "revoked_certificate_outstanding"


# -- no active / several active --------------------------------------------------------------------------------
@pytest.mark.parametrize("entries", [
    [],
    [cert("A", days_left=-1)],
    [cert("S", "superseded", "superseded")],
])
def test_no_unexpired_active_certificate_is_certificate_missing(entries):
    error = refusal(*entries)
    assert (error.code, error.status) == ("certificate_missing", 400)


def test_more_than_two_active_certificates_are_ambiguous():
    error = refusal(cert("B"), cert("C"), cert("D"))
    assert (error.code, error.status) == ("certificate_ambiguous", 409)
    assert "serial B" in error.detail and "serial D" in error.detail


# -- the renewal case ------------------------------------------------------------------------------------------
def test_a_superseded_unexpired_certificate_beside_the_active_one_is_allowed_by_default_and_marked():
    assert vouch(cert("B"), cert("A", "superseded", "superseded", days_left=20)) == (
        "B", FROM_REGISTER_DURING_RENEWAL)
    assert vouch(cert("B"), cert("A", "superseded", days_left=20)) == ("B", FROM_REGISTER_DURING_RENEWAL)


def test_the_renewal_case_is_refused_when_the_setting_says_refuse():
    error = refusal(cert("B"), cert("A", "superseded", "superseded", days_left=20), during_renewal="refuse")
    assert (error.code, error.status) == ("superseded_certificate_outstanding", 403)
    assert vouch(cert("B"), during_renewal="refuse") == ("B", FROM_REGISTER)  # no renewal pending: allowed


# -- resolve_certificate wires it ------------------------------------------------------------------------------
def request(certificate=None) -> AllocationRequest:
    return AllocationRequest(CN, parse_device_id(CN), "group", "g", "x509", False, ("hub",), None, None, None,
                             certificate)


def context(on_record, during_renewal: str = "allow") -> AllocationContext:
    return AllocationContext(None, None, None, lambda device_id: list(on_record), 0.9,
                             without_certificate_during_renewal=during_renewal, now=lambda: NOW)


def test_resolve_turns_the_vouched_record_into_certificate_details():
    details, source = resolve_certificate(request(), context([cert("1F")]))
    assert (details.subject_cn, details.issuer, details.serial_number, source) == (CN, WEST, 0x1F, "register")
    assert details.certificate is None


def test_resolve_uses_the_settings_policy_and_the_contexts_clock():
    on_record = [cert("1F"), cert("0A", "superseded", "superseded", days_left=1)]
    assert resolve_certificate(request(), context(on_record))[1] == FROM_REGISTER_DURING_RENEWAL
    with pytest.raises(OnboardingError, match="superseded_certificate_outstanding"):
        resolve_certificate(request(), context(on_record, "refuse"))


def test_certificate_details_from_dps_never_consult_the_register():
    def register(device_id):
        raise AssertionError("the register was read")

    details, _ = resolve_certificate(request(), context([cert("1F")]))
    ctx = AllocationContext(None, None, None, register, 0.9)
    assert resolve_certificate(request(details), ctx) == (details, "dps")


def test_an_unknown_renewal_policy_is_refused_when_the_context_is_built():
    with pytest.raises(ValueError):
        context([], during_renewal="maybe")


# -- the register: one statement, revocations joined -----------------------------------------------------------
@pytest.fixture
def db(tmp_path):
    database = Database(f"Driver=SQLite3;Database={tmp_path / 'register.db'}")
    for statement in schema_statements(SCHEMA.read_text()):
        database.execute(statement)
    yield database
    database.close()


def add(db: Database, entry: CertificateStanding) -> None:
    CertificateRegister(db).add_certificate(entry.record)
    if entry.revocation_reason:
        db.execute("INSERT INTO revocations (issuer, serial_number, reason, revoked_at, revoked_by) "
                   "VALUES (?, ?, ?, ?, 'test')", [WEST, entry.record.serial_number, entry.revocation_reason,
                                                   NOW.replace(tzinfo=None)])


def test_the_register_returns_each_certificate_with_its_revocation_in_one_statement(db, monkeypatch):
    entries = [cert("B", days_left=700), cert("A", "revoked", "keyCompromise", days_left=20),
               cert("S", "superseded", "superseded", days_left=10), cert("C", device_id="sensor-temp-FAC03-OTHER")]
    for entry in entries:
        add(db, entry)
    statements = []
    fetch_all = db.fetch_all
    monkeypatch.setattr(db, "fetch_all", lambda sql, params=(): statements.append(sql) or fetch_all(sql, params))
    found = issued_certificate(db, CN)
    assert len(statements) == 1 and "LEFT JOIN revocations" in statements[0]
    assert found == entries[:3]  # newest notAfter first; the other device's certificate is not there
    assert refusal(*found).code == "revoked_certificate_outstanding"


def test_two_active_certificates_are_a_renewal_not_yet_re_provisioned_and_take_the_newest():
    """Between a renewal's issuance and the device's re-provisioning it holds two active certificates (issuance keeps
    one per device otherwise): the device must be able to provision again, with either, when DPS sends no details."""
    old, new = cert("B", days_left=30), cert("C", days_left=730)
    assert vouch(old, new) == ("C", FROM_REGISTER_DURING_RENEWAL)
    assert vouch(new, old) == ("C", FROM_REGISTER_DURING_RENEWAL)
    with pytest.raises(OnboardingError) as refused:
        vouched_certificate([old, new], NOW, "refuse")
    assert refused.value.code == "certificate_ambiguous"
