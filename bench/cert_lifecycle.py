"""Certificate lifecycle benchmark: prints figures, asserts nothing. `python -m bench.cert_lifecycle [--quick]`

1. signing through the Key Vault emulator (HTTPS, managed-identity token, the production SDK): device
   certificates per second (CSR check + build + Key Vault `sign` + verification), one thread and eight;
2. CRL publication at 10,000 and 100,000 revocations, as the product publishes (cert_lifecycle.crl.CrlPublisher):
   read the CRL in Blob (Azurite), read SQL (SQLite ODBC), build, sign through the emulator, verify, upload with
   If-Match, read back; with the DER size;
3. the webhook's CRL refresh (allocation.trust.TrustStore) for the 100,000-entry CRL over Blob: the first read
   (download, verify, index), a revalidation of the unchanged CRL (If-None-Match: 304), and the read of a changed
   one;
4. revocations per second through the product's Revoker (SQL rows, audit, one CRL publication per call and CA):
   one call per certificate, then one bulk call, then the same bulk call again (all already revoked);
5. the expiry scan over 100,000 devices on the IoT Hub emulator (HTTPS, azure-iot-hub), 1% needing action:
   wall time, hub queries used, tag writes; queues in memory.

`--quick` keeps every run small (CRLs of 1,000 and 10,000 entries, 100 certificates, 50 + 300 revocations,
10,000 devices).
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import logging
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cert_lifecycle.authority import CaDirectory  # noqa: E402
from cert_lifecycle.csr import check_csr, device_certificate_builder, random_serial_number  # noqa: E402
from cert_lifecycle.records import CertificateRecords  # noqa: E402
from cert_lifecycle.signer import KeyVaultSigner, key_vault_sign_digest  # noqa: E402
from local.serve import free_port, serve_in_thread  # noqa: E402
from local.tls import ensure_tls  # noqa: E402
from shared.config import RegionalCa  # noqa: E402

NOW = dt.datetime.now(dt.UTC)
SIGNING_KEY = b"bench-identity-signing-key-32byt"
HEADER = "bench-identity-header"


def vault(state: Path, tls):
    """The Key Vault emulator and the identity endpoint; a regional CA imported non-exportable, as the seed does."""
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.certificates import CertificateClient, CertificateContentType, CertificatePolicy, KeyType
    from azure.keyvault.keys.crypto import CryptographyClient

    from local.identity import identity_app
    from local.keyvault import create_app
    from local.seed.pki import ensure_root_ca, import_pem, make_intermediate

    kv = serve_in_thread(create_app(state / "kv", SIGNING_KEY), free_port(), tls)
    identity = serve_in_thread(identity_app(SIGNING_KEY, HEADER), free_port())
    os.environ.update(IDENTITY_ENDPOINT=f"http://127.0.0.1:{identity.port}/msi/token", IDENTITY_HEADER=HEADER)
    url = f"https://localhost:{kv.port}"
    credential = ManagedIdentityCredential()
    certificates = CertificateClient(url, credential, verify_challenge_resource=False)
    root = ensure_root_ca(state / "pki")
    cert, key = make_intermediate(root, "intermediate-ca-west", "west")
    policy = CertificatePolicy(issuer_name="Unknown", subject=cert.subject.rfc4514_string(), exportable=False,
                               key_type=KeyType.ec, content_type=CertificateContentType.pem)
    imported = certificates.import_certificate("intermediate-ca-west", import_pem(cert, key, [root.certificate]),
                                               policy=policy)
    crypto = CryptographyClient(imported.key_id, credential, verify_challenge_resource=False)

    def sign_digest_for(key_id: str):
        return key_vault_sign_digest(CryptographyClient(key_id, credential, verify_challenge_resource=False))

    cas = CaDirectory([RegionalCa("west", "intermediate-ca-west")], certificates, sign_digest_for)
    return KeyVaultSigner(cert, key_vault_sign_digest(crypto)), cas, [kv, identity]


def blob_container(state: Path):
    """Azurite on free ports and a CRL container in it (the product's Blob client options)."""
    from azure.storage.blob import BlobServiceClient, LinearRetry

    from local.azurite import AzuritePorts, connection_string, start_azurite
    from shared.storage import client_options

    ports = AzuritePorts(free_port(), free_port(), free_port())
    process = start_azurite(state / "azurite", ports, log_file=state / "azurite.log")
    service = BlobServiceClient.from_connection_string(connection_string(ports), **client_options(LinearRetry))
    return process, service.create_container("crl", public_access="blob")


def csr_pem(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))


def bench_signing(signer: KeyVaultSigner, count: int) -> None:
    csrs = [csr_pem(f"sensor-temp-FAC03-B{i:06d}") for i in range(count)]

    def issue(pem: bytes) -> float:
        started = time.perf_counter()
        checked = check_csr(pem, 16384)
        signer.sign_certificate(device_certificate_builder(
            checked, signer.ca_certificate, random_serial_number(), dt.datetime.now(dt.UTC),
            dt.timedelta(days=730), dt.timedelta(minutes=5)))
        return (time.perf_counter() - started) * 1000

    issue(csrs[0])  # token, connection and CryptographyClient warm-up
    print("\n1. Device certificates signed through the Key Vault emulator (ES384, P-384 CA key, HTTPS)")
    for threads in (1, 8):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            latencies = sorted(pool.map(issue, csrs))
        elapsed = time.perf_counter() - started
        p50, p95 = statistics.median(latencies), latencies[int(len(latencies) * 0.95) - 1]
        print(f"   {threads} thread(s): {count / elapsed:7.1f} certificates/s   p50 {p50:5.1f} ms   p95 {p95:5.1f} ms")


def revocation_db(path: Path, issuer: str, count: int):
    import pyodbc

    from local.seed.seed import SCHEMA, schema_statements
    from shared.sql import Database

    db = Database(f"Driver=SQLite3;Database={path}")
    for statement in schema_statements(SCHEMA.read_text()):
        db.execute(statement)
    conn = pyodbc.connect(f"Driver=SQLite3;Database={path}", autocommit=False)
    cursor = conn.cursor()
    revoked_at = NOW.replace(tzinfo=None, microsecond=0)
    rows = [(issuer, format(x509.random_serial_number(), "X"), "keyCompromise", revoked_at, "bench")
            for _ in range(count)]
    if rows:
        cursor.executemany("INSERT INTO revocations (issuer, serial_number, reason, revoked_at, revoked_by) "
                           "VALUES (?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return db


class BenchAudit:
    def certificate_event(self, *args, **kwargs):
        return True


def bench_crl(signer: KeyVaultSigner, sizes: list[int], state: Path, container) -> None:
    """Publish each CA's CRL the way the refresh timer does; returns nothing, prints per size."""
    from cert_lifecycle.authority import RegionalAuthority
    from cert_lifecycle.crl import CrlPublisher
    from cert_lifecycle.settings import LifecycleSettings
    from shared.storage import BlobStore

    print("\n2. CRL publication to Blob (Azurite): read the CRL there, SQL, build, Key Vault sign, verify, "
          "upload (If-Match), read back")
    issuer = signer.ca_certificate.subject.rfc4514_string()
    for count in sizes:
        db = revocation_db(state / f"crl-{count}.db", issuer, count)
        name = f"bench-ca-{count}"
        authority = RegionalAuthority(name, "west", signer.ca_certificate, signer)
        store = BlobStore(lambda: container)
        publisher = CrlPublisher(store, CertificateRecords(db), BenchAudit(), LifecycleSettings())
        timings = []
        for attempt in ("first", "re-issue"):
            started = time.perf_counter()
            published = publisher.publish(authority, force_reason=attempt, actor="bench")
            timings.append(time.perf_counter() - started)
        started = time.perf_counter()
        publisher.publish(authority, actor="bench")  # up to date: reads the CRL and SQL, writes nothing
        check = time.perf_counter() - started
        print(f"   {count:>7,} revocations: first {timings[0] * 1000:7.0f} ms, re-issue {timings[1] * 1000:7.0f} ms, "
              f"up-to-date check {check * 1000:6.0f} ms; {published.size_bytes / 1e6:5.2f} MB DER "
              f"({published.size_bytes / count:.0f} bytes per entry)")
        db.close()
        LAST_PUBLISHED[count] = (name, authority)


LAST_PUBLISHED: dict[int, tuple[str, object]] = {}


def bench_revocation(cas: CaDirectory, container, state: Path, single: int, bulk: int) -> None:
    """Revocations per second as POST /api/certificates/revoke makes them, without the HTTP hop and without
    disabling devices on hubs (that costs IoT Hub registry calls, 2 per device and hub, against their throttle)."""
    from cert_lifecycle.crl import CrlPublisher
    from cert_lifecycle.records import CertificateRecord
    from cert_lifecycle.revocation import RevocationRequest, Revoker
    from cert_lifecycle.settings import LifecycleSettings
    from shared.audit import AuditWriter
    from shared.storage import BlobStore

    db = revocation_db(state / "revoke.db", "", 0)
    db.execute("INSERT INTO facilities (facility_code, name, region, preferred_hub, manager_email, active) "
               "VALUES ('FAC03', 'Reno', 'west', 'hub', 'm@example.com', 1)")
    records, audit = CertificateRecords(db), AuditWriter(db)
    authority = cas.by_name("intermediate-ca-west")
    serials = [format(x509.random_serial_number(), "X") for _ in range(single + bulk)]
    for i, serial in enumerate(serials):
        records.add_certificate(CertificateRecord(authority.subject, serial, f"sensor-temp-FAC03-R{i:06d}",
                                                  NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=729), "active"))
    publisher = CrlPublisher(BlobStore(lambda: container), records, audit, LifecycleSettings())
    revoker = Revoker(cas, records, publisher, audit, lambda alert: None, None, [])
    publisher.publish(authority, actor="bench")  # warm-up: token, connections, the CA's first CRL
    print("\n4. Revocations through the Revoker (SQLite ODBC, Key Vault emulator signing, CRLs to Azurite)")
    started = time.perf_counter()
    for serial in serials[:single]:
        revoker.revoke(RevocationRequest("keyCompromise", "bench", serial_number=serial))
    elapsed = time.perf_counter() - started
    print(f"   single, one call each ({single}, CRL growing to {single}): {single / elapsed:7.1f} revocations/s "
          f"({elapsed / single * 1000:.0f} ms per call)")
    for label in ("bulk, one call", "bulk again (all already revoked)"):
        started = time.perf_counter()
        revoker.revoke(RevocationRequest("keyCompromise", "bench", serial_numbers=tuple(serials[single:])))
        elapsed = time.perf_counter() - started
        print(f"   {label}, {bulk} serials: {bulk / elapsed:9.1f} revocations/s ({elapsed:.2f} s)")
    db.close()


def bench_webhook_refresh(count: int, container) -> None:
    """The webhook's view of the CRL published above: Key Vault stands in by a fixed certificate list, Blob is real."""
    from types import SimpleNamespace

    from allocation.trust import IssuingCa, TrustStore
    from shared.config import Settings
    from shared.crl import crl_blob_name
    from shared.storage import BlobStore

    name, authority = LAST_PUBLISHED[count]
    cer = authority.certificate.public_bytes(Encoding.DER)
    certificates = SimpleNamespace(
        list_properties_of_certificate_versions=lambda _: [SimpleNamespace(
            version="1", enabled=True, not_before=None, expires_on=None, created_on=None)],
        get_certificate_version=lambda _, version: SimpleNamespace(cer=cer))
    clock = SimpleNamespace(now=0.0)
    trust = TrustStore(Settings({"REGIONAL_CAS": f"west={name}", "CRL_CACHE_TTL_SECONDS": "300"}), certificates,
                       BlobStore(lambda: container), clock=lambda: clock.now)
    ca = IssuingCa(name, "west", (authority.certificate,))
    print(f"\n3. Webhook CRL refresh over Blob (Azurite), {count:,}-entry CRL (allocation.trust.TrustStore)")
    started = time.perf_counter()
    index = trust.revocations(ca)
    cold = time.perf_counter() - started
    clock.now += 301
    started = time.perf_counter()
    trust.revocations(ca)
    not_modified = time.perf_counter() - started
    blob = container.get_blob_client(crl_blob_name(name))
    blob.set_blob_metadata(blob.get_blob_properties().metadata)  # a new ETag: the same CRL, as if re-published
    clock.now += 301
    started = time.perf_counter()
    trust.revocations(ca)
    changed = time.perf_counter() - started
    probes = 100_000
    started = time.perf_counter()
    for serial in range(probes):
        index.is_revoked(serial)
    lookup_ns = (time.perf_counter() - started) / probes * 1e9
    print(f"   first read (download + verify + index) {cold * 1000:6.0f} ms; unchanged (304) {not_modified * 1000:5.1f}"
          f" ms; changed (download + verify + index) {changed * 1000:6.0f} ms; look-up {lookup_ns:.0f} ns")


def bench_scan(devices: int, state: Path, tls) -> None:
    from azure.iot.hub import IoTHubRegistryManager

    from cert_lifecycle.alerts import AlertSender
    from cert_lifecycle.scan import ExpiryScanner
    from cert_lifecycle.settings import LifecycleSettings
    from local.iothub import HubConfig, RateLimits, connection_string, create_app
    from local.iothub import store as hub_store
    from shared.iothub import IotHub, tuned
    from shared.retry import RetryPolicy

    port = free_port()
    config = HubConfig(name="iothub-bench-local", host_name=f"localhost:{port}", state_dir=state / "hub", port=port,
                       policies={"iothubowner": base64.b64encode(os.urandom(32)).decode()},
                       rate_limits=RateLimits(enabled=False))
    app = create_app(config)
    service = app.state.hub.service
    original_put = hub_store.Collection.put
    hub_store.Collection.put = lambda self, key, value: self._items.__setitem__(key, value)  # setup: memory only
    try:
        service.put_device("template", {"deviceId": "template", "authentication": {"type": "certificateAuthority"}},
                           None)
        service.update_reported("template", {"certificate": {"serialNumber": "01", "notAfter": "x", "notBefore": "y"}})
        template = service.store.devices.get("template")
        service.store.devices.delete("template")
        needing = devices // 100
        started = time.perf_counter()
        for i in range(devices):
            record = copy.deepcopy(template)
            device_id = f"sensor-temp-FAC{1 + i % 12:02d}-B{i:07d}"
            record["device"]["deviceId"] = device_id
            days = 5 + (i % 80) if i % 100 == 0 else 200 + i % 500
            not_after = NOW + dt.timedelta(days=days)
            record["twin"]["reported"]["certificate"] = {
                "serialNumber": format(i + 1, "X"), "notAfter": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "notBefore": (not_after - dt.timedelta(days=730)).strftime("%Y-%m-%dT%H:%M:%SZ")}
            service.store.devices._items[device_id] = record
        print(f"\n5. Expiry scan: {devices:,} devices on one emulated hub, {needing:,} needing action "
              f"(setup {time.perf_counter() - started:.1f} s)")
    finally:
        hub_store.Collection.put = original_put
    server = serve_in_thread(app, port, tls)
    registry = tuned(IoTHubRegistryManager.from_connection_string(connection_string(config)))

    class MemoryQueues:
        def __init__(self):
            self.count = 0

        def send(self, queue, message):
            self.count += 1

    queues, settings = MemoryQueues(), LifecycleSettings(escalation_email="security@example.com")

    class Records:
        def facility(self, code):
            return None

    class Audit:
        def certificate_event(self, *args, **kwargs):
            return True

    gateway = IotHub(lambda host: registry, RetryPolicy(attempts=5, budget_s=60), 30)
    renewals = []
    scanner = ExpiryScanner(gateway, [config.host_name], renewals.append, AlertSender(queues, settings), Records(),
                            Audit(), settings)
    for label in ("first run", "second run (same day)"):
        before = gateway.queries[config.host_name]
        started = time.perf_counter()
        report = scanner.run(NOW)
        elapsed = time.perf_counter() - started
        print(f"   {label}: {elapsed:6.1f} s, {gateway.queries[config.host_name] - before} hub queries, "
              f"levels {report.levels}, {len(report.queued)} queued, {report.tags_written} tags written, "
              f"{len(report.digests)} digests")
    registry.protocol.close()
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # keep-alive notices at server shutdown
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (CRLs up to 10,000, 10,000 devices)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cert-") as tmp:
        state = Path(tmp)
        tls = ensure_tls(state)
        os.environ["REQUESTS_CA_BUNDLE"] = str(tls.ca_bundle)
        os.environ["SSL_CERT_FILE"] = str(tls.ca_bundle)
        signer, cas, servers = vault(state, tls)
        azurite, container = blob_container(state)
        sizes = [1_000, 10_000] if args.quick else [10_000, 100_000]
        try:
            bench_signing(signer, 100 if args.quick else 400)
            bench_crl(signer, sizes, state, container)
            bench_webhook_refresh(sizes[-1], container)
            bench_revocation(cas, container, state, 50 if args.quick else 100, 300 if args.quick else 999)
        finally:
            logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
            for server in servers:
                server.server.config.timeout_graceful_shutdown = 1
                server.stop()
            azurite.terminate()
            azurite.wait(10)
        bench_scan(10_000 if args.quick else 100_000, state, tls)


if __name__ == "__main__":
    main()
