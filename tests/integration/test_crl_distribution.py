"""CRLs at their distribution point, end to end (issue 13): published to Blob Storage by the product's publisher,
signed through Key Vault, served to anyone over plain HTTP at the URL every certificate names, read by the
webhook with conditional requests, per CA, across a CA key rotation.

The first tests run Azurite and the Key Vault emulator on free ports with the production SDKs; the last ones run
the whole stack on its fixed ports (like `make run`) and drive it over HTTP as DPS, an operator and a relying party
would.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from types import SimpleNamespace

import pytest
from azure.identity import ManagedIdentityCredential
from azure.keyvault.certificates import CertificateClient, CertificateContentType, CertificatePolicy, KeyType
from azure.keyvault.keys.crypto import CryptographyClient
from azure.storage.blob import BlobServiceClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from allocation.certificate import from_certificate
from allocation.trust import TrustStore
from cert_lifecycle.authority import CaDirectory, CertificateIssuer
from cert_lifecycle.crl import CrlPublisher
from cert_lifecycle.records import CertificateRecords
from cert_lifecycle.settings import LifecycleSettings
from cert_lifecycle.signer import key_vault_sign_digest
from cert_lifecycle.wiring import Lifecycle
from local.identity import identity_app
from local.keyvault import create_app
from local.secrets import stack_secret
from local.seed import data
from local.seed.pki import ensure_root_ca, import_pem, make_intermediate
from local.seed.seed import SCHEMA, schema_statements
from local.serve import free_port, serve_in_thread
from shared.audit import AuditWriter
from shared.config import RegionalCa, Settings
from shared.crl import key_identifier
from shared.errors import OnboardingError
from shared.sql import Database
from shared.storage import BlobStore
from tests.stack_helpers import BASE_URL, CACHE_TTL, VaultCa, dps_request, http, sign_headers
from tests.unit.test_crl_store import conditional_semantics

pytestmark = pytest.mark.integration
SIGNING_KEY = b"crl-distribution-signing-key-32b"
IDENTITY_HEADER = "crl-distribution-header"
WEST = "intermediate-ca-west"


# -- Azurite and the Key Vault emulator, on free ports ---------------------------------------------------------
@pytest.fixture
def vault(tls, tmp_path, monkeypatch):
    """The Key Vault emulator and an identity endpoint of its own; the identity settings are this test's only (the
    stack the later tests start must not inherit them)."""
    kv = serve_in_thread(create_app(tmp_path / "kv", SIGNING_KEY), free_port(), tls)
    identity = serve_in_thread(identity_app(SIGNING_KEY, IDENTITY_HEADER), free_port())
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{identity.port}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    credential = ManagedIdentityCredential()
    yield SimpleNamespace(
        url=f"https://localhost:{kv.port}", credential=credential, root=ensure_root_ca(tmp_path / "pki"),
        certificates=CertificateClient(f"https://localhost:{kv.port}", credential, verify_challenge_resource=False))
    kv.server.config.timeout_graceful_shutdown = 1
    kv.stop()
    identity.stop()


@pytest.fixture(scope="module")
def blobs(azurite):
    service = BlobServiceClient.from_connection_string(azurite)
    return service


@pytest.fixture
def container(blobs):
    """A fresh CRL container with anonymous blob reads, as the seed makes it (and infra in Azure)."""
    client = blobs.create_container(f"crl-{secrets.token_hex(4)}", public_access="blob")
    yield client
    client.delete_container()


def import_ca_version(vault, name: str = WEST) -> x509.Certificate:
    """A new version of the regional CA in the Key Vault emulator: a new, non-exportable key, the same subject."""
    cert, key = make_intermediate(vault.root, name, "west")
    policy = CertificatePolicy(issuer_name="Unknown", subject=cert.subject.rfc4514_string(), exportable=False,
                               key_type=KeyType.ec, content_type=CertificateContentType.pem)
    vault.certificates.import_certificate(name, import_pem(cert, key, [vault.root.certificate]), policy=policy)
    return cert


def csr(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def get(url: str) -> tuple[int, str | None, bytes]:
    """A plain, anonymous HTTP GET, as a relying party fetches a CRL Distribution Points URL (the stack's Blob is
    HTTPS, as Azure's: the relying party trusts the stack's CA, named by REQUESTS_CA_BUNDLE)."""
    context = ssl.create_default_context(cafile=os.environ.get("REQUESTS_CA_BUNDLE"))
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as answer:
            return answer.status, answer.headers.get("Content-Type"), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read()


def cdp_url(cert: x509.Certificate) -> str:
    [point] = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return point.full_name[0].value


def aia_url(cert: x509.Certificate) -> str:
    [access] = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert access.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    return access.access_location.value


def test_blob_store_on_azurite_has_the_semantics_the_unit_tests_assume(container):
    conditional_semantics(BlobStore(lambda: container))


def test_publish_serve_and_trust_across_a_ca_key_rotation(vault, blobs, container, tmp_path):
    """The product's publisher and webhook against the Key Vault emulator and Azurite: certificates name a CDP URL
    that answers a plain GET; after the CA is rotated to a new key, devices of both keys are allocated, the CRL is
    re-signed with the new key and still lists a revoked device of the old one; an unchanged CRL costs a 304."""
    db = Database(f"Driver=SQLite3;Database={tmp_path / 'crl.db'}")
    for statement in schema_statements(SCHEMA.read_text()):
        db.execute(statement)
    db.execute("INSERT INTO facilities (facility_code, name, region, preferred_hub, manager_email, active) "
               "VALUES ('FAC03', 'Plant 3', 'west', 'hub', 'm@example.com', 1)")
    old_ca = import_ca_version(vault)
    base_url = f"{container.url}"
    settings = LifecycleSettings(crl_container=container.container_name, crl_distribution_url=base_url)
    records, audit = CertificateRecords(db), AuditWriter(db)

    def sign_digest_for(key_id: str):
        return key_vault_sign_digest(CryptographyClient(key_id, vault.credential, verify_challenge_resource=False))

    cas = CaDirectory([RegionalCa("west", WEST)], vault.certificates, sign_digest_for, ttl_s=0)
    issuer = CertificateIssuer(cas, records, audit, settings)
    store = BlobStore(lambda: container)
    publisher = CrlPublisher(store, records, audit, settings)
    publisher.publish(cas.by_name(WEST))

    old_device = issuer.issue(csr("sensor-temp-FAC03-OLD1"), actor="test").certificate
    old_revoked = issuer.issue(csr("sensor-temp-FAC03-OLD2"), actor="test").certificate
    status, content_type, der = get(cdp_url(old_device))
    assert (status, content_type) == (200, "application/pkix-crl")
    assert x509.load_der_x509_crl(der).is_signature_valid(old_ca.public_key())
    status, _, ca_der = get(aia_url(old_device))
    assert status == 200 and x509.load_der_x509_certificate(ca_der) == old_ca

    new_ca = import_ca_version(vault)  # the rotation: Key Vault's latest version has a new key
    assert key_identifier(new_ca) != key_identifier(old_ca)
    new_device = issuer.issue(csr("sensor-temp-FAC03-NEW1"), actor="test").certificate
    assert new_device.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == \
        key_identifier(new_ca)
    records.add_revocation(old_ca.subject.rfc4514_string(), format(old_revoked.serial_number, "X"),
                           "keyCompromise", dt.datetime.now(dt.UTC), "test")
    published = publisher.publish(cas.by_name(WEST))
    assert published.changed
    crl = x509.load_der_x509_crl(get(cdp_url(old_device))[2])
    assert crl.is_signature_valid(new_ca.public_key()) and not crl.is_signature_valid(old_ca.public_key())
    assert crl.get_revoked_certificate_by_serial_number(old_revoked.serial_number) is not None
    assert get(aia_url(new_device))[0] == 200 and get(aia_url(old_device))[0] == 200  # one certificate per key

    reads = []

    class CountingStore(BlobStore):
        def read(self, name, etag=None):
            answer = super().read(name, etag)
            reads.append("304" if answer is not None and answer.not_modified else "200")
            return answer

    clock = SimpleNamespace(now=1000.0)
    trust = TrustStore(Settings({"REGIONAL_CAS": f"west={WEST}", "CRL_CACHE_TTL_SECONDS": "60"}),
                       vault.certificates, CountingStore(lambda: container), clock=lambda: clock.now)
    assert trust.check(from_certificate(old_device)).name == WEST
    assert trust.check(from_certificate(new_device)).name == WEST
    with pytest.raises(OnboardingError) as refused:
        trust.check(from_certificate(old_revoked))
    assert refused.value.code == "certificate_revoked"
    clock.now += 120  # past the cache TTL: asked again, unchanged
    assert trust.check(from_certificate(new_device)).name == WEST
    assert reads == ["200", "304"]
    db.close()


# -- the whole stack, over HTTP ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(stack):
    return {"function": stack_secret(stack.state_dir, "function-key-default"),
            "master": stack_secret(stack.state_dir, "function-master-key")}


def post(path: str, body: dict, key: str) -> tuple[int, dict, dict]:
    """POST over HTTP, with the answer's headers, names in lower case (http() in stack_helpers drops them)."""
    request = urllib.request.Request(f"{BASE_URL}{path}?code={urllib.parse.quote(key, safe='')}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read()), {k.lower(): v for k, v in answer.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), {k.lower(): v for k, v in exc.headers.items()}


def issue_over_http(keys, facility: str = "FAC03") -> tuple[x509.Certificate, dict]:
    cn = f"sensor-temp-{facility}-CRL{secrets.randbelow(10**8):08d}"
    status, body = http("POST", "/api/certificates/sign", {"csr": csr(cn).decode()}, key=keys["function"],
                        headers=sign_headers())
    assert status == 200, body
    return x509.load_pem_x509_certificate(body["certificate"].encode()), body


def test_400_revocations_publish_and_the_cdp_url_serves_them_signed_by_the_issuer(stack, services, keys):
    """Issue 13, done when: 400 revocations in one CA publish; a certificate's CDP URL returns, over plain HTTP, a
    CRL signed by its issuer holding all of them; a revoked certificate is refused and a good one allocated."""
    good, answer = issue_over_http(keys)
    doomed, _ = issue_over_http(keys)
    ca_certificate = x509.load_pem_x509_certificate(answer["caCertificates"][0].encode())
    subject = ca_certificate.subject.rfc4514_string()
    records = CertificateRecords(services.database)
    now = dt.datetime.now(dt.UTC)
    bulk = [format(x509.random_serial_number(), "X") for _ in range(399)]
    for serial in bulk:  # recorded as the Revoker records them; the CRL re-issue comes with the next revocation
        assert records.add_revocation(subject, serial, "keyCompromise", now, "test-bulk")
    started = time.perf_counter()
    status, revoked = http("POST", "/api/certificates/revoke", {
        "serialNumber": format(doomed.serial_number, "X"), "issuer": WEST, "reason": "keyCompromise",
        "revokedBy": "crl-distribution-test"}, key=keys["master"])
    elapsed = time.perf_counter() - started
    assert status == 200, revoked
    assert revoked["changed"] is True and elapsed < 30

    status, content_type, der = get(cdp_url(good))  # anonymous, plain HTTP: what any relying party does
    assert (status, content_type) == (200, "application/pkix-crl")
    crl = x509.load_der_x509_crl(der)
    assert crl.issuer == good.issuer and crl.is_signature_valid(ca_certificate.public_key())
    listed = {entry.serial_number for entry in crl}
    assert {int(s, 16) for s in bulk} | {doomed.serial_number} <= listed and len(listed) >= 400
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == revoked["crlNumbers"][WEST]
    assert len(base64.b64encode(der)) > 25_000  # more than the Key Vault secret that used to hold it could
    status, _, ca_der = get(aia_url(good))
    assert status == 200 and x509.load_der_x509_certificate(ca_der) == ca_certificate

    time.sleep(CACHE_TTL + 0.5)
    linked = [h.host_name for h in data.HUBS]
    status, body = http("POST", "/api/allocate", dps_request(doomed, linked), key=keys["function"])
    assert (status, body["error"]["code"]) == (403, "certificate_revoked")
    status, body = http("POST", "/api/allocate", dps_request(good, linked), key=keys["function"])
    assert status == 200, body
    assert body["iotHubHostName"] == data.HUBS[0].host_name


def test_a_ca_without_a_crl_refuses_its_devices_with_a_retried_503_while_the_others_allocate(stack, services, keys):
    linked = [h.host_name for h in data.HUBS]
    east = VaultCa.load(services, "intermediate-ca-east")
    west = VaultCa.load(services, WEST)
    blob = services.blob_service.get_blob_client(services.settings.crl_container, "intermediate-ca-east.crl")
    blob.delete_blob()
    try:
        time.sleep(CACHE_TTL + 0.5)
        cn = f"sensor-temp-FAC10-CRL{secrets.randbelow(10**8):08d}"
        status, body, headers = post("/api/allocate", dps_request(east.issue(cn), linked), keys["function"])
        assert (status, body["error"]["code"]) == (503, "crl_unavailable"), body
        assert "intermediate-ca-east" in body["error"]["detail"] and headers.get("retry-after") == "5"
        cn = f"sensor-temp-FAC03-CRL{secrets.randbelow(10**8):08d}"
        status, body, _ = post("/api/allocate", dps_request(west.issue(cn), linked), keys["function"])
        assert status == 200, body
        time.sleep(CACHE_TTL + 0.2)  # health answers from a report at most HEALTH_CACHE_SECONDS old
        status, health = http("GET", "/api/health/details", key=keys["function"])
        assert status == 503 and health["components"]["crl:intermediate-ca-east"]["status"] == "error"
    finally:
        lifecycle = Lifecycle(services)  # what the refresh timer does on its next run
        assert lifecycle.publisher.publish(lifecycle.cas.by_name("intermediate-ca-east")).changed
    time.sleep(CACHE_TTL + 0.5)
    cn = f"sensor-temp-FAC10-CRL{secrets.randbelow(10**8):08d}"
    assert post("/api/allocate", dps_request(east.issue(cn), linked), keys["function"])[0] == 200
