"""Allocation webhook benchmark: prints figures, asserts nothing. `python -m bench.allocation [--quick]`

1. warm decisions: parse + decide + response for 10,000 mixed requests, in process, caches warm
   (SQLite through ODBC for facilities and hub limits, CRLs verified once, hub counts from memory);
2. cold import of function_app vs azure.functions alone, each in fresh interpreters (median of 5);
3. CRL load + verify + index for 1,000 / 100,000 / 1,000,000 entries, and revocation look-up time;
4. `--http`: webhook latency over HTTP against the running local stack (p50/p99, 32 concurrent callers), as DPS
   calls it: POST /api/allocate with the function key, device certificates of the stack's regional CAs (signed
   by its Key Vault). Run it against a stack under the realistic-latency profile (issue 16; target p99 < 50 ms
   warm): `LOCAL_FAULT_PROFILE=realistic make run`, then `python -m bench.allocation --http`.
   `--rate R` paces the callers to R requests/s in all (open loop: each request starts on its schedule, and its
   latency counts from then, so a late start is charged to the webhook). DPS's documented rate limit is 1,000 device
   registrations per minute per service unit, about 17/s (azure-docs includes/iot-dps-limits.md). Without --rate
   the callers run back to back (closed loop), which measures saturation: there the mean latency is callers /
   throughput (Little's law), whatever the webhook does.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from allocation.capacity import CapacityMonitor  # noqa: E402
from allocation.decision import AllocationContext, decide  # noqa: E402
from allocation.request import parse_allocation_request  # noqa: E402
from allocation.response import allocation_response  # noqa: E402
from allocation.trust import TrustStore  # noqa: E402
from local.seed.seed import seed_sql  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.crl import verify_and_index  # noqa: E402
from shared.facilities import FacilityDirectory  # noqa: E402
from shared.sql import Database  # noqa: E402
from shared.storage import BlobRead  # noqa: E402

NOW = dt.datetime.now(dt.UTC)


def make_ca(region: str):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Bench CA {region}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    return cert, key


def issue(ca_cert, ca_key, cn: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=700))
            .sign(ca_key, hashes.SHA256()))
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _utc_time(value: dt.datetime) -> bytes:
    return _der(0x17, value.strftime("%y%m%d%H%M%SZ").encode())


def build_crl(ca_cert, ca_key, entries: int) -> bytes:
    """A signed v2 CRL with `entries` revoked serials, DER-encoded by hand: cryptography's builder needs
    minutes for a million entries, and this is only test data. Signed with the CA key (ECDSA P-256, SHA-256)."""
    ecdsa_sha256 = _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d040302")))
    revoked_at = _utc_time(NOW)
    revoked = b"".join(_der(0x30, _der_int(serial * 7919) + revoked_at) for serial in range(1, entries + 1))
    crl_number = _der(0x30, _der(0x06, bytes.fromhex("551d14")) + _der(0x04, _der_int(1)))  # RFC 5280 5.2.3
    tbs = _der(0x30, _der_int(1) + ecdsa_sha256 + ca_cert.subject.public_bytes()
               + _utc_time(NOW - dt.timedelta(hours=1)) + _utc_time(NOW + dt.timedelta(days=7))
               + (_der(0x30, revoked) if entries else b"") + _der(0xA0, _der(0x30, crl_number)))
    signature = ca_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _der(0x30, tbs + ecdsa_sha256 + _der(0x03, b"\x00" + signature))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_decisions(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-alloc-"))
    db = Database(f"Driver=SQLite3;Database={tmp / 'bench.db'}")
    seed_sql(db)
    db.execute("UPDATE iot_hubs SET max_devices = ?", [10**9])  # every decision takes a place: never run out
    hubs = [r["host_name"] for r in db.fetch_all("SELECT host_name FROM iot_hubs")]
    regions = {"west": range(1, 5), "central": range(5, 9), "east": range(9, 13)}
    cas = {region: make_ca(region) for region in regions}
    certs = SimpleNamespace(  # one current version per CA, as Key Vault lists it
        list_properties_of_certificate_versions=lambda name: [SimpleNamespace(
            version="1", enabled=True, expires_on=None, not_before=None, created_on=None)],
        get_certificate_version=lambda name, version: SimpleNamespace(
            cer=cas[name][0].public_bytes(serialization.Encoding.DER)))
    crls = SimpleNamespace(read=lambda name, etag=None: BlobRead(build_crl(*cas[name.removesuffix(".crl")], 1000),
                                                                 '"1"'))
    settings = Settings({"REGIONAL_CAS": ",".join(f"{r}={r}" for r in regions)})
    ctx = AllocationContext(TrustStore(settings, certs, crls), FacilityDirectory(db, 60),
                            CapacityMonitor(db, lambda host: 500, hubs, 60), lambda _: [], 0.9)
    types = ["temp", "press", "vib", "flow"]
    bodies = []
    for i in range(200):  # 200 distinct certificates, cycled: signature checks are per request anyway
        region = list(regions)[i % 3]
        facility = f"FAC{list(regions[region])[i % 4]:02d}"
        cn = f"sensor-{types[i % 4]}-{facility}-SN{i:06d}"
        bodies.append(json.dumps({
            "enrollmentGroup": {"enrollmentGroupId": f"sensors-{region}", "attestation": {"type": "x509"}},
            "deviceRuntimeContext": {"registrationId": cn, "x509": {"clientCertificate": issue(*cas[region], cn)}},
            "linkedHubs": hubs}).encode())
    for body in bodies:  # warm every cache
        decide(parse_allocation_request(body), ctx, reserve=ctx.capacity.reserve)
    latencies = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        allocation = decide(parse_allocation_request(bodies[i % len(bodies)]), ctx, reserve=ctx.capacity.reserve)
        allocation_response(allocation, NOW)
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    print(f"warm decisions (each taking its hub place in SQL): {n} requests in {elapsed:.2f}s = "
          f"{n / elapsed:,.0f}/s on one core; "
          f"p50 {percentile(latencies, 0.5):.3f} ms, p99 {percentile(latencies, 0.99):.3f} ms, "
          f"max {max(latencies):.3f} ms")


def import_time(module: str, runs: int = 5) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    samples = [float(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                                    check=True).stdout) for _ in range(runs)]
    return statistics.median(samples) * 1000


def bench_imports() -> None:
    base = import_time("azure.functions")
    app = import_time("function_app")
    print(f"cold import (median of 5 fresh interpreters): azure.functions {base:.1f} ms, function_app {app:.1f} ms "
          f"(+{app - base:.1f} ms)")
    heavy = subprocess.run(
        [sys.executable, "-c", "import sys, function_app; print(sorted(m for m in ('azure.iot.hub', "
         "'azure.storage.blob', 'azure.storage.queue', 'azure.keyvault.secrets', 'pyodbc', 'uamqp') "
         "if m in sys.modules))"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    print(f"SDKs imported by function_app at module level: {heavy}")


def bench_crl(sizes: list[int]) -> None:
    ca_cert, ca_key = make_ca("crl")
    for size in sizes:
        t0 = time.perf_counter()
        der = build_crl(ca_cert, ca_key, size)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = verify_and_index(der, ca_cert, NOW)
        indexed = time.perf_counter() - t0
        probes = 100_000
        t0 = time.perf_counter()
        hits = sum(index.is_revoked(s * 7919) for s in range(probes))
        lookup_ns = (time.perf_counter() - t0) / probes * 1e9
        print(f"CRL {size:>9,} entries ({len(der) / 1e6:6.1f} MB): load+verify+index {indexed:6.3f} s, "
              f"look-up {lookup_ns:5.0f} ns ({hits} hits of {probes}); built in {built:.1f} s")


def stack_certificates(services, count: int) -> list[tuple[str, str]]:
    """(registration id, base64 DER) of `count` device certificates signed by the stack's regional CAs in its Key
    Vault, for known plants (as Scenario._stranger signs one)."""
    from cert_lifecycle.signer import KeyVaultSigner, key_vault_sign_digest
    from local.seed import data
    from shared.keyvault import crypto_client

    by_region: dict[str, list[str]] = {}
    for facility in data.facilities():
        by_region.setdefault(facility.region, []).append(facility.code)
    signers = {}
    for region, name in data.CA_NAMES.items():
        ca = services.certificates.get_certificate(name)
        signers[region] = KeyVaultSigner(x509.load_der_x509_certificate(bytes(ca.cer)), key_vault_sign_digest(
            crypto_client(services.settings, services.credential, ca.key_id)))
    regions = sorted(signers)
    out = []
    for i in range(count):
        region = regions[i % len(regions)]
        cn = f"sensor-temp-{by_region[region][i % len(by_region[region])]}-SNB{i:07d}"
        key = ec.generate_private_key(ec.SECP256R1())
        signer = signers[region]
        cert = signer.sign_certificate(
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(signer.ca_certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(minutes=5))
            .not_valid_after(NOW + dt.timedelta(days=30)))
        out.append((cn, base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()))
    return out


def bench_http(requests: int, callers: int, settings_path: Path, rate: float | None = None) -> None:
    """Webhook latency over HTTP against the running stack: `callers` threads, each with its own keep-alive
    connection (as DPS's front ends would hold), first a warm-up round, then `requests` timed POSTs; with `rate`,
    request n of the whole run is due at n / rate seconds (open loop) and its latency counts from when it was due."""
    import http.client
    import os
    import threading

    from local.secrets import stack_secret
    from shared.bootstrap import Services

    values = json.loads(settings_path.read_text())["Values"]
    os.environ.update(values)
    services = Services(Settings())
    state_dir = settings_path.parent / ".local" if settings_path.parent == REPO else settings_path.parent
    key = stack_secret(state_dir, "function-key-default")
    hubs = services.settings.iot_hub_host_names
    certificates = stack_certificates(services, 64)
    bodies = [json.dumps({
        "enrollmentGroup": {"enrollmentGroupId": "bench", "attestation": {"type": "x509"}},
        "deviceRuntimeContext": {"registrationId": cn, "x509": {"clientCertificate": der}},
        "linkedHubs": hubs}).encode() for cn, der in certificates]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def caller(index: int, count: int, record: bool, started: float) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", 7071, timeout=30)
        for n in range(count):
            body = bodies[(index * 7 + n) % len(bodies)]
            t0 = time.perf_counter()
            if rate and record:  # this caller's n-th request is the run's (n * callers + index)-th
                t0 = started + (n * callers + index) / rate
                time.sleep(max(0.0, t0 - time.perf_counter()))
            connection.request("POST", "/api/allocate", body=body,
                               headers={"x-functions-key": key, "Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            took = (time.perf_counter() - t0) * 1000
            if record:
                with lock:
                    latencies.append(took)
                    statuses[response.status] = statuses.get(response.status, 0) + 1
        connection.close()

    def round_of(count_each: int, record: bool) -> float:
        started = time.perf_counter()
        threads = [threading.Thread(target=caller, args=(i, count_each, record, started)) for i in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started

    # The same 64 registrations are allocated over and over, and no device is ever created, so every answer takes a
    # place on its hub (allocation/capacity.py) and the hubs would fill after a few thousand requests: the bench
    # lifts the stack's hub limits for its run (a 409 no_hub_capacity answer is not the latency being measured).
    limits = {r["host_name"]: r["max_devices"] for r in services.database.fetch_all(
        "SELECT host_name, max_devices FROM iot_hubs")}
    for host in limits:
        services.database.execute("UPDATE iot_hubs SET max_devices = ? WHERE host_name = ?", [10_000_000, host])
    try:
        round_of(4, record=False)  # warm: caches, connections, worker threads
        elapsed = round_of(max(1, requests // callers), record=True)
    finally:
        for host, limit in limits.items():
            services.database.execute("UPDATE iot_hubs SET max_devices = ? WHERE host_name = ?", [limit, host])
    load = f"paced to {rate:g} requests/s" if rate else "back to back"
    print(f"webhook over HTTP ({callers} callers {load}, {len(latencies)} requests, warm): "
          f"p50 {percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
          f"max {max(latencies):.1f} ms, {len(latencies) / elapsed:,.0f} requests/s; statuses {statuses}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (1,000 requests, CRLs up to 100,000)")
    parser.add_argument("--http", action="store_true", help="only the webhook over HTTP against the running stack")
    parser.add_argument("--requests", type=int, default=2_000, help="--http: timed requests (default 2,000)")
    parser.add_argument("--callers", type=int, default=32, help="--http: concurrent callers (default 32)")
    parser.add_argument("--rate", type=float, default=None,
                        help="--http: pace all callers to this many requests/s (open loop; default: back to back)")
    parser.add_argument("--settings", type=Path, default=REPO / "local.settings.json",
                        help="--http: the running stack's settings file (its state dir is beside it, or .local/)")
    args = parser.parse_args()
    if args.http:
        bench_http(args.requests, args.callers, args.settings, args.rate)
        return
    bench_decisions(1_000 if args.quick else 10_000)
    bench_imports()
    bench_crl([1_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000])


if __name__ == "__main__":
    main()
