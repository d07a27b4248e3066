"""CRL contents and publication: SQL (SQLite ODBC) is the source, an in-memory Blob container the store (with
Blob Storage's ETag conditions, tests/unit/test_crl_store.py), a local key signs as Key Vault would."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from cert_lifecycle.authority import RegionalAuthority
from cert_lifecycle.crl import CrlEntry, CrlPublisher, PublishedCrl, crl_builder, crl_entries
from cert_lifecycle.records import CertificateRecord, CertificateRecords, RevocationRecord
from cert_lifecycle.settings import LifecycleSettings
from cert_lifecycle.signer import KeyVaultSigner
from local.seed.seed import SCHEMA, schema_statements
from shared.audit import AuditWriter
from shared.crl import authority_key_id, ca_certificate_blob_name, key_identifier, verify_and_index
from shared.errors import OnboardingError
from shared.sql import Database
from shared.storage import BlobChanged
from tests.pki_helpers import NOW, make_ca
from tests.unit.test_crl_store import MemoryBlobStore


def local_vault_sign(key):
    def sign(algorithm, digest):
        r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return sign


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
    return CrlPublisher(MemoryBlobStore(), records, AuditWriter(database), LifecycleSettings(), lambda: clock.now)


BLOB = "intermediate-ca-west.crl"


def published_index(publisher, authority, now=NOW):
    return verify_and_index(publisher._store.blobs[BLOB]["data"], authority.certificate, now)


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


def test_an_expired_entry_stays_until_a_crl_issued_after_the_expiry_has_listed_it():
    """RFC 5280 3.3: if every CRL since the expiry failed to publish, the next one still carries the entry."""
    keep = dt.timedelta(days=7)
    expired = RevocationRecord("0A", "keyCompromise", NOW - dt.timedelta(days=60), NOW - dt.timedelta(days=30))
    listed_before = PublishedCrl("ca", 5, 1, NOW - dt.timedelta(days=31), NOW - dt.timedelta(days=24),
                                 frozenset({0x0A}), changed=False)
    listed_after = PublishedCrl("ca", 6, 1, NOW - dt.timedelta(days=29), NOW - dt.timedelta(days=22),
                                frozenset({0x0A}), changed=False)
    assert [e.serial_number for e in crl_entries([expired], NOW, keep, listed_before)] == [0x0A]
    assert crl_entries([expired], NOW, keep, listed_after) == []
    assert crl_entries([expired], NOW, keep, None) == []


def test_a_revoked_certificate_leaves_the_crl_a_lifetime_after_it_expired_and_its_row_stays(publisher, authority,
                                                                                             clock, database):
    records = CertificateRecords(database)
    records.add_certificate(CertificateRecord(authority.subject, "0A", "sensor-temp-FAC03-SN1",
                                              NOW - dt.timedelta(days=700), NOW + dt.timedelta(days=2), "active"))
    revoke(publisher, authority, "0A")
    revoke(publisher, authority, "0B")  # not on record: no known expiry, never leaves
    publisher.publish(authority)
    clock.now = NOW + dt.timedelta(days=5)  # expired 3 days ago: still listed (refresh near nextUpdate)
    assert publisher.publish(authority).changed
    assert published_index(publisher, authority, clock.now).revoked == frozenset({0x0A, 0x0B})
    clock.now = NOW + dt.timedelta(days=10)  # expired 8 days ago, and a CRL issued after expiry listed it
    assert publisher.publish(authority).changed
    assert published_index(publisher, authority, clock.now).revoked == frozenset({0x0B})
    assert records.revocation(authority.subject, "0A") is not None


def test_publish_is_idempotent_and_numbers_grow(publisher, authority):
    revoke(publisher, authority, "AB")
    first = publisher.publish(authority)
    assert first.changed and first.number == int(NOW.timestamp())  # no CRL known: continue from the clock
    assert published_index(publisher, authority).is_revoked(0xAB)
    stored = publisher._store.blobs[BLOB]
    assert (stored["content_type"], stored["metadata"]["crlnumber"]) == ("application/pkix-crl", str(first.number))
    assert stored["metadata"]["nextupdate"] == first.next_update.strftime("%Y-%m-%dT%H:%M:%SZ")
    again = publisher.publish(authority)
    assert not again.changed and publisher._store.writes == 2  # the CRL, and once the CA certificate (AIA)
    revoke(publisher, authority, "CD")
    third = publisher.publish(authority)
    assert third.changed and third.number == first.number + 1
    assert published_index(publisher, authority).revoked == frozenset({0xAB, 0xCD})
    events = publisher._records._db.fetch_all("SELECT action FROM certificate_events")
    assert [e["action"] for e in events] == ["crl_published", "crl_published"]


def test_the_certificate_of_the_current_key_is_published_once_beside_the_crl(publisher, authority):
    publisher.publish(authority)
    name = ca_certificate_blob_name(authority.name, key_identifier(authority.certificate))
    stored = publisher._store.blobs[name]
    assert stored["content_type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(stored["data"]) == authority.certificate
    publisher.publish(authority, force_reason="again")
    assert [n for n in publisher._store.blobs if n.endswith(".crt")] == [name]


def test_a_concurrent_writer_storing_an_older_view_is_corrected(publisher, authority):
    revoke(publisher, authority, "01")
    publisher.publish(authority)
    stale = publisher._store.blobs[BLOB]
    revoke(publisher, authority, "02")

    def overwrite_with_stale(name):  # an unconditional writer, e.g. a restore: If-Match cannot stop it
        publisher._store.put(name, stale["data"], stale["metadata"])

    publisher._store.after_write = overwrite_with_stale
    publisher.publish(authority)
    assert published_index(publisher, authority).revoked == frozenset({0x01, 0x02})


def test_a_writer_holding_an_older_view_cannot_overwrite_a_newer_crl(publisher, authority, database):
    revoke(publisher, authority, "01")
    publisher.publish(authority)
    store = publisher._store
    older = publisher.stored(authority)  # what a second instance read before the first one published again
    revoke(publisher, authority, "02")
    newer = publisher.publish(authority)
    with pytest.raises(BlobChanged):  # the second instance writes with If-Match on the ETag it read
        store.write(BLOB, b"older view", "application/pkix-crl", etag=older.etag)
    assert published_index(publisher, authority).crl_number == newer.number

    # A publisher that lost such a race reads again and decides again: here nothing is left to do.
    racing = CrlPublisher(store, CertificateRecords(database), AuditWriter(database), LifecycleSettings(),
                          lambda: NOW)
    real_stored = racing.stored
    calls = []

    def stale_first(authority):
        calls.append(1)
        return older if len(calls) == 1 else real_stored(authority)

    racing.stored = stale_first
    result = racing.publish(authority)
    assert not result.changed and result.number == newer.number and len(calls) == 2


def test_crl_numbers_only_grow_past_a_broken_blob(publisher, authority):
    publisher.publish(authority, force_reason="first")
    number = published_index(publisher, authority).crl_number
    publisher._store.put(BLOB, b"not a CRL", {"crlnumber": str(number + 40)})
    repaired = publisher.publish(authority)
    assert repaired.changed and repaired.number == number + 41


def test_refresh_is_due_near_next_update_and_when_the_stored_crl_is_broken(publisher, authority, clock):
    publisher.publish(authority, force_reason="first")
    number = published_index(publisher, authority).crl_number
    clock.now = NOW + dt.timedelta(days=2)
    assert not publisher.publish(authority).changed
    clock.now = NOW + dt.timedelta(days=4)  # less than 96 hours before nextUpdate
    refreshed = publisher.publish(authority)
    assert refreshed.changed and refreshed.number == int(clock.now.timestamp()) > number
    publisher._store.put(BLOB, b"garbage", {"crlnumber": "41"})  # broken, and its number from an old backup
    repaired = publisher.publish(authority)
    assert repaired.changed and repaired.number == refreshed.number + 1


def test_a_crl_of_any_size_is_published(database, authority):
    """The 25 KB Key Vault secret held about 350 entries; Blob has no cap a CRL reaches."""
    publisher = CrlPublisher(MemoryBlobStore(), CertificateRecords(database), AuditWriter(database),
                             LifecycleSettings(), lambda: NOW)
    for serial in range(1, 1201):
        revoke(publisher, authority, format(serial, "X"))
    published = publisher.publish(authority)
    assert published.entries == 1200 and published.size_bytes > 25_000
    assert len(published_index(publisher, authority)) == 1200


def test_storage_down_is_a_dependency_failure_and_the_revocation_stays(publisher, authority, database):
    revoke(publisher, authority, "AB")
    publisher._store.down = True
    with pytest.raises(OnboardingError) as failed:
        publisher.publish(authority)
    assert failed.value.code == "dependency_unavailable" and failed.value.status == 503
    assert CertificateRecords(database).revocation(authority.subject, "AB") is not None
    publisher._store.down = False
    assert publisher.publish(authority).changed  # what the refresh timer does on its next run
    assert published_index(publisher, authority).is_revoked(0xAB)


def test_a_ca_rotated_to_a_new_key_signs_its_next_crl_with_it(publisher, authority):
    revoke(publisher, authority, "AB")
    publisher.publish(authority)
    rotated = make_ca()  # same subject, new key: the CA's next Key Vault version
    assert rotated.certificate.subject == authority.certificate.subject
    new_authority = RegionalAuthority(authority.name, authority.region, rotated.certificate,
                                      KeyVaultSigner(rotated.certificate, local_vault_sign(rotated.key)))
    published = publisher.publish(new_authority)  # the stored CRL is another key's: re-signed at once
    assert published.changed
    index = verify_and_index(publisher._store.blobs[BLOB]["data"], rotated.certificate, NOW)
    assert index.is_revoked(0xAB)
    crl = x509.load_der_x509_crl(publisher._store.blobs[BLOB]["data"])
    assert authority_key_id(crl) == key_identifier(rotated.certificate)


def test_revocation_rows_are_idempotent_and_join_the_register(database, authority):
    records = CertificateRecords(database)
    records.add_certificate(CertificateRecord(authority.subject, "AB", "sensor-temp-FAC03-SN1", NOW,
                                              NOW + dt.timedelta(days=730), "active"))
    assert records.add_revocation(authority.subject, "AB", "keyCompromise", NOW, "me") is True
    assert records.add_revocation(authority.subject, "AB", "superseded", NOW, "me") is False
    [row] = records.revocations(authority.subject)
    assert (row.reason, row.not_after) == ("keyCompromise", NOW + dt.timedelta(days=730))


def test_the_refresh_timer_publishes_every_ca_it_can_when_one_is_missing(publisher, authority, monkeypatch):
    from cert_lifecycle import functions
    from cert_lifecycle.authority import CaDirectory
    from shared.config import RegionalCa

    cer = authority.certificate.public_bytes(serialization.Encoding.DER)

    class Vault:
        def get_certificate(self, name):
            from azure.core.exceptions import ResourceNotFoundError

            if name != authority.name:
                raise ResourceNotFoundError(f"certificate {name} not found")
            return SimpleNamespace(cer=cer, key_id=f"https://vault/keys/{name}/1")

    cas = CaDirectory([RegionalCa("east", "intermediate-ca-east"), RegionalCa("west", authority.name)], Vault(),
                      lambda key_id: authority.signer._sign_digest)
    monkeypatch.setattr(functions, "lifecycle", lambda: SimpleNamespace(cas=cas, publisher=publisher))
    with pytest.raises(RuntimeError, match="intermediate-ca-east"):
        functions.refresh_crls.build().get_user_function()(None)
    assert published_index(publisher, authority).crl_number  # the west CA's CRL was published all the same
