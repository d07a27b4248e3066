"""CRL contents and publication: SQL (SQLite ODBC) is the source, a fake Key Vault the store, a local key signs."""

from __future__ import annotations

import base64
import datetime as dt
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from cert_lifecycle.authority import RegionalAuthority
from cert_lifecycle.crl import CrlEntry, CrlPublisher, crl_builder, crl_entries
from cert_lifecycle.records import CertificateRecord, CertificateRecords, RevocationRecord
from cert_lifecycle.settings import LifecycleSettings
from cert_lifecycle.signer import KeyVaultSigner
from local.seed.seed import SCHEMA, schema_statements
from shared.audit import AuditWriter
from shared.crl import verify_and_index
from shared.errors import OnboardingError
from shared.sql import Database
from tests.pki_helpers import NOW, make_ca


def local_vault_sign(key):
    def sign(algorithm, digest):
        r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return sign


class FakeSecrets:
    def __init__(self):
        self.values: dict[str, tuple[str, dict]] = {}
        self.writes = 0
        self.after_write = None  # simulates a concurrent writer

    def get_secret(self, name):
        from azure.core.exceptions import ResourceNotFoundError

        if name not in self.values:
            raise ResourceNotFoundError(f"secret {name} not found")
        value, tags = self.values[name]
        return SimpleNamespace(value=value, properties=SimpleNamespace(tags=tags))

    def set_secret(self, name, value, content_type=None, tags=None):
        assert content_type == "application/pkix-crl"
        self.values[name] = (value, dict(tags or {}))
        self.writes += 1
        if self.after_write:
            hook, self.after_write = self.after_write, None
            hook(name)


@pytest.fixture
def database(tmp_path):
    db = Database(f"Driver=SQLite3;Database={tmp_path / 'crl.db'}")
    for statement in schema_statements(SCHEMA.read_text()):
        db.execute(statement)
    yield db
    db.close()


@pytest.fixture
def authority():
    ca = make_ca()
    return RegionalAuthority("intermediate-ca-west", "west", ca.certificate,
                             KeyVaultSigner(ca.certificate, local_vault_sign(ca.key)))


@pytest.fixture
def clock():
    return SimpleNamespace(now=NOW)


@pytest.fixture
def publisher(database, clock):
    records = CertificateRecords(database)
    return CrlPublisher(FakeSecrets(), records, AuditWriter(database), LifecycleSettings(), lambda: clock.now)


def published_index(publisher, authority, now=NOW):
    value, _ = publisher._secrets.values["crl-intermediate-ca-west"]
    return verify_and_index(base64.b64decode(value), authority.certificate, now)


def revoke(publisher, authority, serial: str, reason="keyCompromise", at=NOW):
    return publisher._records.add_revocation(authority.subject, serial, reason, at, "test")


def test_builder_lists_entries_with_reason_codes_number_and_aki(authority):
    entries = [CrlEntry(0xAB, NOW, "keyCompromise"), CrlEntry(0xCD, NOW, "unspecified"),
               CrlEntry(0xEF, NOW, "superseded")]
    crl = authority.signer.sign_crl(crl_builder(authority.certificate, entries, 7, NOW, dt.timedelta(days=7)))
    assert crl.is_signature_valid(authority.certificate.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    reasons = {}
    for entry in crl:
        try:
            reasons[entry.serial_number] = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reasons[entry.serial_number] = None
    assert reasons == {0xAB: x509.ReasonFlags.key_compromise, 0xCD: None, 0xEF: x509.ReasonFlags.superseded}
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(days=7, minutes=1)


def test_entries_of_long_expired_certificates_leave_the_crl():
    keep = dt.timedelta(days=7)
    records = [RevocationRecord("0A", "keyCompromise", NOW, NOW - dt.timedelta(days=30)),
               RevocationRecord("0B", "keyCompromise", NOW, NOW - dt.timedelta(days=3)),
               RevocationRecord("0C", "superseded", NOW, None)]
    assert [e.serial_number for e in crl_entries(records, NOW, keep)] == [0x0B, 0x0C]


def test_publish_is_idempotent_and_numbers_grow(publisher, authority):
    revoke(publisher, authority, "AB")
    first = publisher.publish(authority)
    assert first.changed and first.number == int(NOW.timestamp())  # no CRL known: continue from the clock
    assert published_index(publisher, authority).is_revoked(0xAB)
    again = publisher.publish(authority)
    assert not again.changed and publisher._secrets.writes == 1
    revoke(publisher, authority, "CD")
    third = publisher.publish(authority)
    assert third.changed and third.number == first.number + 1
    assert published_index(publisher, authority).revoked == frozenset({0xAB, 0xCD})
    events = publisher._records._db.fetch_all("SELECT action FROM certificate_events")
    assert [e["action"] for e in events] == ["crl_published", "crl_published"]


def test_a_concurrent_writer_storing_an_older_view_is_corrected(publisher, authority):
    revoke(publisher, authority, "01")
    publisher.publish(authority)
    stale_value, stale_tags = publisher._secrets.values["crl-intermediate-ca-west"]
    revoke(publisher, authority, "02")

    def overwrite_with_stale(name):
        publisher._secrets.values[name] = (stale_value, stale_tags)

    publisher._secrets.after_write = overwrite_with_stale
    publisher.publish(authority)
    assert published_index(publisher, authority).revoked == frozenset({0x01, 0x02})
    assert publisher._secrets.writes == 3


def test_refresh_is_due_near_next_update_and_when_the_stored_crl_is_broken(publisher, authority, clock):
    publisher.publish(authority, force_reason="first")
    number = published_index(publisher, authority).crl_number
    clock.now = NOW + dt.timedelta(days=2)
    assert not publisher.publish(authority).changed
    clock.now = NOW + dt.timedelta(days=4)  # less than 96 hours before nextUpdate
    refreshed = publisher.publish(authority)
    assert refreshed.changed and refreshed.number == number + 1
    publisher._secrets.values["crl-intermediate-ca-west"] = ("bm90IGEgQ1JM", {"crlNumber": "41"})
    repaired = publisher.publish(authority)
    assert repaired.changed and repaired.number == 42


def test_a_crl_too_large_for_its_secret_is_refused_not_truncated(database, authority):
    settings = LifecycleSettings(crl_max_secret_chars=2000)
    publisher = CrlPublisher(FakeSecrets(), CertificateRecords(database), AuditWriter(database), settings,
                             lambda: NOW)
    for serial in range(60):
        revoke(publisher, authority, format(serial + 1, "X"))
    with pytest.raises(OnboardingError) as refused:
        publisher.publish(authority)
    assert refused.value.code == "crl_too_large" and publisher._secrets.writes == 0


def test_revocation_rows_are_idempotent_and_join_the_register(database, authority):
    records = CertificateRecords(database)
    records.add_certificate(CertificateRecord(authority.subject, "AB", "sensor-temp-FAC03-SN1", NOW,
                                              NOW + dt.timedelta(days=730), "active"))
    assert records.add_revocation(authority.subject, "AB", "keyCompromise", NOW, "me") is True
    assert records.add_revocation(authority.subject, "AB", "superseded", NOW, "me") is False
    [row] = records.revocations(authority.subject)
    assert (row.reason, row.not_after) == ("keyCompromise", NOW + dt.timedelta(days=730))
