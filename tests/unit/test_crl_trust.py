"""The webhook's trust store (allocation/trust.py): each regional CA on its own, every current version of a CA,
CRLs read from Blob with conditional requests, and no going back to an older CRL."""

from __future__ import annotations

import datetime as dt
import threading
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from allocation.certificate import from_certificate
from allocation.trust import TrustStore
from shared.config import Settings
from shared.crl import key_identifier
from shared.errors import OnboardingError
from tests import pki_helpers
from tests.allocation_harness import FakeCertificates
from tests.pki_helpers import NOW, make_ca
from tests.unit.test_crl_store import MemoryBlobStore

WEST, EAST = "intermediate-ca-west", "intermediate-ca-east"


def ca_with_key_id(region: str, name: str) -> pki_helpers.TestCa:
    """A CA certificate with a subjectKeyIdentifier, as Key Vault's CAs have (same subject per region)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"Test Intermediate CA {region}")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=30)).not_valid_after(NOW + dt.timedelta(days=1800))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return pki_helpers.TestCa(name, cert, key)


def issue_naming_key(ca: pki_helpers.TestCa, cn: str = "sensor-temp-FAC03-SN1") -> x509.Certificate:
    """A device certificate that names its signing key (authorityKeyIdentifier), as the product issues them."""
    device_key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.certificate.subject).public_key(device_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=700))
            .add_extension(x509.AuthorityKeyIdentifier(key_identifier(ca.certificate), None, None), critical=False)
            .sign(ca.key, hashes.SHA256()))


class World:
    """A trust store over fake Key Vault certificates (with versions) and an in-memory CRL container."""

    def __init__(self, cas: dict[str, pki_helpers.TestCa], ttl_s: float = 300):
        self.time = SimpleNamespace(now=NOW, mono=1000.0)
        self.certificates = FakeCertificates(cas)
        self.crls = MemoryBlobStore()
        regions = {WEST: "west", EAST: "east"}
        settings = Settings({"REGIONAL_CAS": ",".join(f"{regions[name]}={name}" for name in (WEST, EAST)),
                             "CRL_CACHE_TTL_SECONDS": str(ttl_s)})
        self.trust = TrustStore(settings, self.certificates, self.crls, now=lambda: self.time.now,
                                clock=lambda: self.time.mono)

    def publish(self, ca: pki_helpers.TestCa, revoked=(), number: int = 1, **kwargs) -> None:
        self.crls.put(f"{ca.name}.crl", ca.crl(list(revoked), number=number, **kwargs))

    def later(self, seconds: float) -> None:
        self.time.mono += seconds
        self.time.now += dt.timedelta(seconds=seconds)

    def check(self, certificate: x509.Certificate):
        return self.trust.check(from_certificate(certificate))


def refused(call) -> OnboardingError:
    with pytest.raises(OnboardingError) as caught:
        call()
    return caught.value


# -- per-CA loading --------------------------------------------------------------------------------------------
def test_a_ca_missing_from_key_vault_refuses_only_its_own_devices():
    west = make_ca(WEST, "west")
    world = World({WEST: west})  # the east CA was never imported
    world.publish(west)
    assert world.check(west.issue("sensor-temp-FAC03-SN1")).name == WEST
    east_device = make_ca(EAST, "east").issue("sensor-temp-FAC10-SN1")
    error = refused(lambda: world.check(east_device))
    assert (error.code, error.status) == ("crl_unavailable", 503)
    assert f"{EAST}: not in Key Vault" in error.detail
    assert world.check(west.issue("sensor-temp-FAC03-SN2")).name == WEST  # the west region keeps allocating


def test_a_ca_whose_crl_is_missing_or_broken_refuses_only_its_own_devices():
    west, east = make_ca(WEST, "west"), make_ca(EAST, "east")
    world = World({WEST: west, EAST: east})
    world.publish(west)
    error = refused(lambda: world.check(east.issue("sensor-temp-FAC10-SN1")))
    assert error.code == "crl_unavailable" and "no CRL blob intermediate-ca-east.crl" in error.detail
    world.crls.put(f"{EAST}.crl", b"garbage")
    world.later(10)
    assert "unreadable CRL" in refused(lambda: world.check(east.issue("sensor-temp-FAC10-SN2"))).detail
    assert world.check(west.issue("sensor-temp-FAC03-SN1")).name == WEST


def test_a_device_of_a_known_ca_does_not_wait_for_a_broken_one():
    west, east = make_ca(WEST, "west"), make_ca(EAST, "east")
    world = World({WEST: west, EAST: east}, ttl_s=1)
    world.publish(west)
    world.check(west.issue("sensor-temp-FAC03-SN1"))
    del world.certificates.versions[EAST]  # the east CA breaks afterwards
    world.later(5)
    calls = world.certificates.calls
    assert world.check(west.issue("sensor-temp-FAC03-SN2")).name == WEST
    assert world.certificates.calls == calls + 1  # only the west CA was listed again


def test_a_certificate_of_no_configured_ca_is_unknown_issuer_when_every_ca_loads():
    west, east = make_ca(WEST, "west"), make_ca(EAST, "east")
    world = World({WEST: west, EAST: east})
    error = refused(lambda: world.check(make_ca("rogue", "north").issue("sensor-temp-FAC03-SN1")))
    assert (error.code, error.status) == ("unknown_issuer", 403)


# -- CA key rotation -------------------------------------------------------------------------------------------
def test_devices_of_the_old_and_the_new_key_are_both_trusted_after_a_ca_rotation():
    old, new = ca_with_key_id("west", WEST), ca_with_key_id("west", WEST)
    assert old.certificate.subject == new.certificate.subject
    world = World({WEST: old, EAST: make_ca(EAST, "east")})
    world.certificates.add_version(WEST, new)
    old_device, new_device = issue_naming_key(old), issue_naming_key(new, "sensor-temp-FAC03-SN2")
    revoked_old = issue_naming_key(old, "sensor-temp-FAC03-SN3")
    world.publish(new, revoked=[revoked_old.serial_number], number=7)  # new CRLs are signed with the new key
    assert world.check(old_device).name == WEST
    assert world.check(new_device).name == WEST
    assert refused(lambda: world.check(revoked_old)).code == "certificate_revoked"
    assert world.trust.issuer_of(from_certificate(new_device)).certificate == new.certificate  # newest first


def test_a_crl_signed_by_the_previous_key_is_still_verified():
    old, new = ca_with_key_id("west", WEST), ca_with_key_id("west", WEST)
    world = World({WEST: old})
    world.certificates.add_version(WEST, new)
    revoked = issue_naming_key(new)
    world.publish(old, revoked=[revoked.serial_number], number=3)  # published before the rotation
    assert refused(lambda: world.check(revoked)).code == "certificate_revoked"


def test_a_disabled_version_no_longer_vouches_for_its_devices():
    old, new = ca_with_key_id("west", WEST), ca_with_key_id("west", WEST)
    world = World({WEST: old})
    world.certificates.versions[WEST] = [(old, False), (new, True)]  # the old key withdrawn
    world.publish(new)
    assert world.check(issue_naming_key(new)).name == WEST
    error = refused(lambda: world.check(issue_naming_key(old, "sensor-temp-FAC03-SN2")))
    assert error.code == "unknown_issuer" and "not signed by a current key" in error.detail
    world.publish(old, number=2)
    world.later(400)
    assert refused(lambda: world.check(issue_naming_key(new))).code == "crl_unavailable"  # old key's CRL


def test_certificates_without_an_authority_key_id_are_checked_against_every_version():
    old, new = make_ca(WEST, "west"), make_ca(WEST, "west")
    world = World({WEST: old})
    world.certificates.add_version(WEST, new)
    world.publish(new)
    assert world.check(old.issue("sensor-temp-FAC03-SN1")).name == WEST
    impostor = make_ca(WEST, "west")  # same subject, a key Key Vault never had
    assert refused(lambda: world.check(impostor.issue("sensor-temp-FAC03-SN2"))).code == "unknown_issuer"


def test_a_ca_with_no_current_version_refuses_its_devices_with_a_reason():
    west = make_ca(WEST, "west")
    world = World({WEST: west, EAST: make_ca(EAST, "east")})
    world.publish(west)
    world.check(west.issue("sensor-temp-FAC03-SN1"))
    world.certificates.versions[WEST] = [(west, False)]
    world.later(400)
    error = refused(lambda: world.check(west.issue("sensor-temp-FAC03-SN2")))
    assert error.code == "crl_unavailable" and "no enabled, unexpired version" in error.detail


# -- CRL freshness ---------------------------------------------------------------------------------------------
def test_a_crl_with_a_lower_number_is_refused_and_the_held_one_kept_while_in_date():
    west = make_ca(WEST, "west")
    world = World({WEST: west})
    device = west.issue("sensor-temp-FAC03-SN1")
    world.publish(west, revoked=[device.serial_number], number=10, next_update=NOW + dt.timedelta(days=2))
    assert refused(lambda: world.check(device)).code == "certificate_revoked"
    world.publish(west, revoked=[], number=9, next_update=NOW + dt.timedelta(days=7))  # an older CRL put back
    world.later(400)
    assert refused(lambda: world.check(device)).code == "certificate_revoked"  # still the held CRL 10
    assert world.trust.revocations(world.trust.issuer_of(from_certificate(device))).crl_number == 10
    world.later(2 * 86400)  # the held CRL passes its nextUpdate; the store still offers only the older one
    error = refused(lambda: world.check(device))
    assert error.code == "crl_unavailable" and "past nextUpdate" in error.detail
    world.publish(west, revoked=[device.serial_number], number=11, this_update=world.time.now - dt.timedelta(hours=1),
                  next_update=world.time.now + dt.timedelta(days=7))
    world.later(10)
    assert refused(lambda: world.check(device)).code == "certificate_revoked"  # a newer CRL is taken at once


def test_an_unchanged_crl_is_revalidated_with_its_etag_and_not_downloaded_again():
    west = make_ca(WEST, "west")
    world = World({WEST: west})
    world.publish(west, number=4)
    ca = world.trust.issuer_of(from_certificate(west.issue("sensor-temp-FAC03-SN1")))
    first = world.trust.revocations(ca)
    etag = world.crls.blobs[f"{WEST}.crl"]["etag"]
    world.later(400)  # past the cache TTL
    again = world.trust.revocations(ca)
    assert again is first  # the 304 kept the verified index
    assert world.crls.reads == [(f"{WEST}.crl", None), (f"{WEST}.crl", etag)]
    world.publish(west, revoked=[5], number=5)
    world.later(400)
    changed = world.trust.revocations(ca)
    assert changed.crl_number == 5 and changed.is_revoked(5)


def test_storage_down_refuses_with_crl_unavailable_and_recovers():
    west = make_ca(WEST, "west")
    world = World({WEST: west}, ttl_s=1)
    world.publish(west)
    device = west.issue("sensor-temp-FAC03-SN1")
    world.crls.down = True  # nothing held yet: fail closed
    error = refused(lambda: world.check(device))
    assert error.code == "crl_unavailable" and "ConnectionError" in error.detail
    world.crls.down = False
    world.later(6)
    assert world.check(device).name == WEST


def test_storage_down_keeps_the_crl_held_until_its_next_update_then_fails_closed():
    west = make_ca(WEST, "west")
    world = World({WEST: west}, ttl_s=1)
    world.publish(west, next_update=NOW + dt.timedelta(hours=1))
    device = west.issue("sensor-temp-FAC03-SN1")
    world.check(device)
    world.crls.down = True
    world.later(2)
    assert world.check(device).name == WEST  # the verified CRL held is in date: still trusted
    world.later(3600)
    error = refused(lambda: world.check(device))
    assert error.code == "crl_unavailable" and "past nextUpdate" in error.detail


def test_a_request_does_not_wait_behind_another_one_rereading_a_crl_it_holds():
    west = make_ca(WEST, "west")
    world = World({WEST: west})
    world.publish(west, number=1)
    ca = world.trust.issuer_of(from_certificate(west.issue("sensor-temp-FAC03-SN1")))
    held = world.trust.revocations(ca)
    entered, release = threading.Event(), threading.Event()
    original = world.crls.read

    def slow_read(name, etag=None):
        entered.set()
        release.wait(5)
        return original(name, etag)

    world.crls.read = slow_read
    world.later(400)
    worker = threading.Thread(target=world.trust.revocations, args=(ca,))
    worker.start()
    assert entered.wait(5)
    try:
        assert world.trust.revocations(ca) is held  # answered at once with the CRL held
    finally:
        release.set()
        worker.join(5)
