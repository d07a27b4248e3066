"""The certificate lifecycle against the whole local stack (fixed ports, like `make run`).

Signing through the Key Vault emulator with path validation to the local root, bad CSRs, revocation seen by
the allocation webhook within the CRL cache TTL, the expiry scan (classification, queue-once, escalation,
hub queries counted), and the full renewal loop with a simulated device, searched for private keys after.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import ssl
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store

from cert_lifecycle.crl import CRL_CONTENT_TYPE
from cert_lifecycle.expiry import TAG
from cert_lifecycle.scan import ExpiryScanner
from cert_lifecycle.wiring import Lifecycle
from local.fleet.device import SimulatedSensor
from local.fleet.device_link import DeviceUnauthorized
from local.fleet.scenario import Scenario, ScenarioOptions
from local.iothub.auth import make_sas
from local.secrets import stack_secret
from local.seed import data
from local.tls import ensure_tls
from shared.iothub import IotHub
from shared.retry import RetryPolicy
from shared.serials import serial_hex
from tests.stack_helpers import VaultCa, app_environment, dps_request, http, sign_headers

pytestmark = pytest.mark.integration
CACHE_TTL = 1.0
API = {"api-version": "2021-04-12"}
WEST, CENTRAL = data.HUBS[0], data.HUBS[1]
LINKED = [h.host_name for h in data.HUBS]
ESCALATION = "security@example.com"
DAY = dt.timedelta(days=1)


STACK_SETTINGS = {"CERT_SUPERSEDED_GRACE_HOURS": "0", "CERT_ESCALATION_EMAIL": ESCALATION}


@pytest.fixture(scope="module")
def keys(stack):
    return {"function": stack_secret(stack.state_dir, "function-key-default"),
            "master": stack_secret(stack.state_dir, "function-master-key")}


@pytest.fixture(scope="module")
def root(stack) -> x509.Certificate:
    return x509.load_pem_x509_certificate((stack.state_dir / "pki" / "root-ca.pem").read_bytes())


@pytest.fixture
def sas_device(stack, services):
    """A device with symmetric keys on a hub, and an HTTP client that acts as that device (a device SAS token):
    the emulator's device routes accept only the device's own credential, as IoT Hub does."""
    context = ssl.create_default_context(cafile=str(ensure_tls(stack.state_dir).ca_bundle))
    clients = []

    def make(host_name: str, device_id: str) -> httpx.Client:
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        services.registry_manager(host_name).create_device_with_sas(device_id, key, key, "enabled")
        client = httpx.Client(base_url=f"https://{host_name}", verify=context, timeout=70,
                              headers={"Authorization": make_sas(f"{host_name}/devices/{device_id}", key)})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def serial_cn(prefix: str, facility: str = "FAC03") -> str:
    return f"sensor-temp-{facility}-{prefix}{secrets.randbelow(10**8):08d}"


def csr_pem(cn: str, key=None) -> tuple[bytes, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM), key


def sign(body: bytes | dict, key: str | None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """sign_csr with the function key and, unless headers say otherwise, the default test partner's credential."""
    return http("POST", "/api/certificates/sign", body, key=key, headers=sign_headers() if headers is None else headers)


def verify_chain(leaf_pem: str, chain_pems: list[str], root: x509.Certificate) -> None:
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    intermediates = [x509.load_pem_x509_certificate(p.encode()) for p in chain_pems]
    # RFC 5280 path validation with the Web PKI profile, except that a device certificate names its device in
    # the CN (what DPS and IoT Hub match) and need not carry a subjectAltName.
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    verifier = (PolicyBuilder().store(Store([root])).time(dt.datetime.now(dt.UTC))
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
                .build_client_verifier())
    verified = verifier.verify(leaf, intermediates)
    assert [c.subject for c in verified.chain] == [leaf.subject, intermediates[0].subject, root.subject]


def queue_texts(services, name: str) -> list[str]:
    client = services.queue_service.get_queue_client(name)
    try:
        messages = client.peek_messages(max_messages=32)
    except Exception:  # a queue that was never created holds nothing
        return []
    texts = []
    for message in messages:  # raw peek: the lifecycle's messages are base64 (queue trigger), others may not be
        raw = message.content.decode() if isinstance(message.content, bytes) else message.content
        try:
            texts.append(base64.b64decode(raw, validate=True).decode())
        except ValueError:
            texts.append(raw)
    return texts


def wait_for(check, timeout: float = 20, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


# -- Key Vault: the CA key never leaves -----------------------------------------------------------------
def test_ca_keys_cannot_be_read_out_of_key_vault(stack, services):
    from azure.core.exceptions import HttpResponseError
    from azure.keyvault.secrets import SecretClient

    # A Key Vault certificate's backing secret holds its private key when the key is exportable: ours are not.
    secrets = SecretClient(services.settings.key_vault_url, services.credential, verify_challenge_resource=False)
    for name in data.CA_NAMES.values():
        key = services.keys.get_key(name).key  # the certificate's key: public half only
        assert key.x and all(getattr(key, part, None) is None for part in ("d", "p", "q", "dp", "dq", "qi"))
        assert "PRIVATE KEY" not in (secrets.get_secret(name).value or "")
    token = services.credential.get_token("https://vault.azure.net/.default").token
    context = ssl.create_default_context(cafile=str(ensure_tls(stack.state_dir).ca_bundle))
    with httpx.Client(verify=context, headers={"Authorization": f"Bearer {token}"}) as client:
        release = client.post(f"https://localhost:8450/keys/{data.CA_NAMES['west']}/release",
                              params={"api-version": "7.6"}, json={"target": "x"})
    assert release.status_code >= 400 and "PRIVATE" not in release.text
    with pytest.raises(HttpResponseError):
        services.keys.release_key(data.CA_NAMES["west"], "attestation-token")


# -- sign_csr -------------------------------------------------------------------------------------------
def test_signed_certificates_validate_from_the_local_root_through_the_regional_ca(stack, services, keys, root):
    cn = serial_cn("SIGN")
    pem, _ = csr_pem(cn)
    status, body = sign(pem, keys["function"])
    assert status == 200, body
    assert (body["deviceId"], body["issuer"]) == (cn, "intermediate-ca-west")
    verify_chain(body["certificate"], body["caCertificates"], root)
    leaf = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert 150 <= leaf.serial_number.bit_length() <= 159
    assert abs((leaf.not_valid_after_utc - leaf.not_valid_before_utc).days - 730) <= 1
    row = services.database.fetch_one("SELECT device_id, status, issuer FROM certificates WHERE serial_number = ?",
                                      [body["serialNumber"]])
    assert row == {"device_id": cn, "status": "active", "issuer": leaf.issuer.rfc4514_string()}

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # central plant, RSA, JSON body
    status, body = sign({"csr": csr_pem(serial_cn("RSA", "FAC07"), rsa_key)[0].decode()}, keys["function"])
    assert status == 200, body
    assert body["issuer"] == "intermediate-ca-central"
    verify_chain(body["certificate"], body["caCertificates"], root)


def test_bad_csrs_get_catalogue_codes_never_500(stack, keys):
    good, _ = csr_pem(serial_cn("BAD"))
    tampered = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
    tampered = tampered[:-4] + bytes(b ^ 0xFF for b in tampered[-4:])
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    cases = {
        "csr_signature_invalid": tampered,
        "invalid_registration_id": csr_pem("device-42")[0],
        "unknown_facility": csr_pem("sensor-temp-FAC99-SN1")[0],
        "weak_key": csr_pem(serial_cn("WEAK"), weak)[0],
        "csr_invalid": b"-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgQ1NS\n-----END CERTIFICATE REQUEST-----\n",
        "request_too_large": b"A" * (1024 * 1024),
        "invalid_request": json.dumps({"pem": good.decode()}).encode(),
    }
    for code, body in cases.items():
        status, answer = sign(body, keys["function"])
        assert 400 <= status < 500 and answer["error"]["code"] == code, (code, status, answer)
    assert sign(good, None)[0] == 401
    assert sign(good, "wrong")[0] == 401


# -- revocation -----------------------------------------------------------------------------------------
def test_revoked_certificate_is_refused_by_the_webhook_and_revoking_again_changes_nothing(stack, services, keys):
    cn = serial_cn("REV")
    status, issued = sign(csr_pem(cn)[0], keys["function"])
    assert status == 200, issued
    cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
    services.registry_manager(WEST.host_name).create_device_with_certificate_authority(cn, "enabled")
    assert http("POST", "/api/allocate", dps_request(cert, LINKED), key=keys["function"])[0] == 200

    request = {"serialNumber": issued["serialNumber"], "issuer": "intermediate-ca-west", "reason": "keyCompromise",
               "revokedBy": "security-team"}
    assert http("POST", "/api/certificates/revoke", request, key=keys["function"])[0] == 401  # admin only
    status, first = http("POST", "/api/certificates/revoke", request, key=keys["master"])
    assert status == 200, first
    assert first["changed"] is True and first["revoked"][0]["deviceId"] == cn
    assert first["disabledOn"] == {cn: [WEST.host_name]}
    time.sleep(CACHE_TTL + 0.5)
    status, refused = http("POST", "/api/allocate", dps_request(cert, LINKED), key=keys["function"])
    assert (status, refused["error"]["code"]) == (403, "certificate_revoked")

    status, second = http("POST", "/api/certificates/revoke", request, key=keys["master"])
    assert status == 200 and second["changed"] is False
    assert second["crlNumbers"] == first["crlNumbers"]
    blob = services.blob_service.get_blob_client(services.settings.crl_container, "intermediate-ca-west.crl")
    assert blob.get_blob_properties().content_settings.content_type == CRL_CONTENT_TYPE
    crl = x509.load_der_x509_crl(blob.download_blob().readall())
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert services.registry_manager(WEST.host_name).get_device(cn).status == "disabled"
    assert any(issued["serialNumber"] in text for text in queue_texts(services, "security-alerts"))
    assert services.database.fetch_one("SELECT status FROM certificates WHERE serial_number = ?",
                                       [issued["serialNumber"]]) == {"status": "revoked"}
    status, bad = http("POST", "/api/certificates/revoke", {"serialNumber": "XYZ", "reason": "keyCompromise"},
                       key=keys["master"])
    assert (status, bad["error"]["code"]) == (400, "invalid_serial_number")


# -- the expiry scan ------------------------------------------------------------------------------------
def report_certificate(client: httpx.Client, device_id: str, certificate: dict | None) -> None:
    answer = client.patch(f"/devices/{device_id}/twin/properties/reported", params=API,
                          json={"certificate": certificate})
    assert answer.status_code == 200, answer.text


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class CountingRegistries:
    """The SDK registry managers, with every twin query (POST /devices/query) counted at the SDK boundary."""

    def __init__(self, services):
        self.services, self.calls = services, 0

    def __call__(self, host):
        registry = self.services.registry_manager(host)
        outer = self

        class CountedQuery:
            def get_twins(self, *args, **kwargs):
                outer.calls += 1
                return registry.protocol.query.get_twins(*args, **kwargs)

        class CountedProtocol:
            query = CountedQuery()

            def __getattr__(self, name):
                return getattr(registry.protocol, name)

        class Counted:
            protocol = CountedProtocol()

            def __getattr__(self, name):
                return getattr(registry, name)

        return Counted()


EXPECTED = {  # (days before expiry, lifetime days) -> level; None: outside the query window
    (400, 730): None, (120, 730): None, (89, 730): "renew", (45, 730): "renew", (29, 730): "critical",
    (5, 730): "critical", (-1, 730): "expired",
    (400, 60): None, (120, 60): None, (89, 60): "ok", (45, 60): "ok", (29, 60): "ok", (5, 60): "critical",
    (-1, 60): "expired",
}


def test_expiry_scan_classifies_queues_each_device_once_and_escalates(stack, services, sas_device):
    now = dt.datetime.now(dt.UTC)
    devices = {}
    for i, (days, lifetime) in enumerate(EXPECTED):
        hub = (WEST, CENTRAL)[i % 2]
        device_id = serial_cn(f"EXP{days + 1}L{lifetime}", "FAC01" if hub is WEST else "FAC05")
        not_after = now + dt.timedelta(days=days)
        report_certificate(sas_device(hub.host_name, device_id), device_id, {
            "serialNumber": format(secrets.randbits(120), "X"), "notAfter": iso(not_after),
            "notBefore": iso(not_after - dt.timedelta(days=lifetime)), "issuer": "intermediate-ca-west"})
        devices[(days, lifetime)] = (hub.host_name, device_id)
    silent = serial_cn("NOCERT")
    services.registry_manager(WEST.host_name).create_device_with_certificate_authority(silent, "enabled")

    lifecycle = Lifecycle(services)
    sent: list[dict] = []
    registries = CountingRegistries(services)
    scanner = ExpiryScanner(IotHub(registries, RetryPolicy(), 10), lifecycle.hosts, sent.append, lifecycle.alerts,
                            lifecycle.records, lifecycle.audit, lifecycle.settings)
    first = scanner.run()
    assert first.queries == registries.calls == 2 * len(data.HUBS)  # window + unreported, one page each
    mine = {device_id for _, device_id in devices.values()}
    queued = [m["deviceId"] for m in sent if m["deviceId"] in mine]
    needing = {devices[k][1] for k, level in EXPECTED.items() if level not in (None, "ok")}
    assert sorted(queued) == sorted(needing)
    assert silent in first.hubs[0].without_certificate_listed

    second = scanner.run()
    assert [m["deviceId"] for m in sent if m["deviceId"] in mine] == queued  # nothing new on the second run
    assert registries.calls == 4 * len(data.HUBS)
    assert second.queued == [] and second.digests == []

    for (days, lifetime), level in EXPECTED.items():
        host, device_id = devices[(days, lifetime)]
        tag = (services.registry_manager(host).get_twin(device_id).tags or {}).get(TAG)
        if level in (None, "ok"):
            assert tag is None, (days, lifetime, tag)
        else:
            assert (tag["level"], tag["state"]) == (level, "queued"), (days, lifetime, tag)

    digests = [json.loads(t) for t in queue_texts(services, "certificate-alerts")]
    critical_west = next(d for d in digests if d["facility"] == "FAC01" and d["level"] == "critical")
    escalated = devices[(29, 730)]
    if escalated[0] == WEST.host_name:
        assert escalated[1] in [d["deviceId"] for d in critical_west["devices"]]
    assert critical_west["cc"] == [ESCALATION] and critical_west["to"] == ["manager.fac01@example.com"]
    assert all(d["cc"] == [] for d in digests if d["level"] == "renew")
    all_critical = [d["deviceId"] for digest in digests if digest["level"] == "critical" for d in digest["devices"]]
    assert escalated[1] in all_critical

    # Three days on and nothing heard from them (the hub's lastActivityTime): the expired sensors cannot renew by
    # themselves any more (DPS refuses an expired certificate), so they are stranded and their digest says so.
    later = scanner.run(now + 3 * DAY)
    expired = {devices[k][1] for k, level in EXPECTED.items() if level == "expired"}
    assert expired <= set(later.stranded)
    assert not set(later.stranded) & {devices[(29, 730)][1], devices[(5, 60)][1]}  # due, not expired: no visit yet
    digests = [json.loads(t) for t in queue_texts(services, "certificate-alerts")]
    stranded = [d for digest in digests if digest["level"] == "expired" and digest.get("stranded")
                for d in digest["devices"] if d["stranded"]]
    assert expired <= {d["deviceId"] for d in stranded}


# -- the renewal loop -----------------------------------------------------------------------------------
def admin_run(function: str, keys) -> None:
    status, _ = http("POST", f"/admin/functions/{function}", {"input": ""}, key=keys["master"])
    assert status == 202


def test_full_renewal_loop_without_any_private_key_leaving_the_device(stack, services, keys, root):
    """Microsoft's "How to roll X.509 device certificates", end to end: a sensor provisioned by DPS with its factory
    certificate renews through its twin, is refused by its hub with the new certificate, registers with DPS again
    (the webhook keeps its hub and twin, DPS updates the identity's thumbprint), connects, and only then is the old
    certificate superseded. No private key ever leaves the sensor."""
    west_ca = VaultCa.load(services, "intermediate-ca-west")
    device_id = serial_cn("RENEW")
    old_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    old = west_ca.signer.sign_certificate(
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .issuer_name(west_ca.certificate.subject).public_key(old_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=700)).not_valid_after(now + dt.timedelta(days=20)))
    old_serial = serial_hex(old.serial_number)
    services.database.execute(  # the factory issuance on record, as sign_csr would have left it
        "INSERT INTO certificates (issuer, serial_number, device_id, not_before, not_after, status) "
        "VALUES (?, ?, ?, ?, ?, 'active')",
        [old.issuer.rfc4514_string(), old_serial, device_id, old.not_valid_before_utc.replace(tzinfo=None),
         old.not_valid_after_utc.replace(tzinfo=None)])
    with app_environment(stack.settings_path):
        dps = Scenario(services, stack.state_dir, ScenarioOptions()).dps([])
    sensor = SimulatedSensor(device_id, _key=old_key)
    pem = serialization.Encoding.PEM
    sensor.install_certificate({"certificate": old.public_bytes(pem).decode(),
                                "caCertificates": [west_ca.certificate.public_bytes(pem).decode()]})
    first = sensor.power_on(dps, str(ensure_tls(stack.state_dir).ca_cert))
    assert (first.status, first.assigned_hub) == ("assigned", WEST.host_name), first
    registry = services.registry_manager(WEST.host_name)
    assert registry.get_device(device_id).authentication.x509_thumbprint.primary_thumbprint.upper() == \
        thumbprint(old)
    sensor.connection().report({"certificate": sensor.certificate_report()})
    hubs = services.iothub()

    def renewal(status: str) -> dict:
        def desired() -> dict | None:
            found = hubs.get_twin(WEST.host_name, device_id).desired.get(TAG) or {}
            return found if found.get("status") == status else None
        found = wait_for(desired)
        assert found, f"renewal never reached {status}"
        return found

    admin_run("scan_expiring_certificates", keys)  # -> certificate-renewals -> process_renewal (queue trigger)
    request = renewal("requested")
    assert request["serialNumber"] == old_serial
    assert sensor.answer_renewal() == "csr"  # its new key stays in the sensor; only the CSR is reported
    admin_run("collect_renewal_csrs", keys)
    answer = renewal("issued")
    new = x509.load_pem_x509_certificate(answer["certificate"].encode())
    verify_chain(answer["certificate"], answer["chain"], root)
    assert sensor.answer_renewal() == "installed" and sensor.certificate == new

    admin_run("collect_renewal_csrs", keys)  # installed, by the device's word only: nothing completes yet
    time.sleep(1)
    assert (hubs.get_twin(WEST.host_name, device_id).tags[TAG]["state"]) == "issued"
    assert services.database.fetch_one(
        "SELECT COUNT(*) AS n FROM revocations WHERE serial_number = ?", [old_serial])["n"] == 0

    rejoined = sensor.rejoin(dps)
    assert rejoined == {"refused": True, "reprovisioned": True, "connected": True, "hub": WEST.host_name,
                        "sameHub": True}
    assert registry.get_device(device_id).authentication.x509_thumbprint.primary_thumbprint.upper() == \
        thumbprint(new)
    sensor.release()
    admin_run("collect_renewal_csrs", keys)
    closed = wait_for(lambda: ((registry.get_twin(device_id).tags or {}).get(TAG) or {}).get("state") == "closed")
    assert closed
    twin = hubs.get_twin(WEST.host_name, device_id)
    assert twin.tags["certificate"]["serialNumber"] == serial_hex(new.serial_number)

    assert services.database.fetch_one(
        "SELECT reason FROM revocations WHERE serial_number = ?", [old_serial]) == {"reason": "superseded"}
    statuses = {r["serial_number"]: r["status"] for r in services.database.fetch_all(
        "SELECT serial_number, status FROM certificates WHERE device_id = ?", [device_id])}
    assert statuses == {old_serial: "superseded", answer["newSerialNumber"]: "active"}
    time.sleep(CACHE_TTL + 0.5)
    assert http("POST", "/api/allocate", dps_request(old, LINKED), key=keys["function"])[1]["error"]["code"] \
        == "certificate_revoked"
    assert http("POST", "/api/allocate", dps_request(new, LINKED), key=keys["function"])[0] == 200

    admin_run("refresh_crls", keys)  # the CRL timer runs in the host too
    log_file = Path(stack.state_dir) / "logs" / "functions-host.log"
    wait_for(lambda: "Functions.refresh_crls' (Succeeded" in log_file.read_text(errors="replace"))
    assert_no_private_key_anywhere(services, stack, [old_key, sensor._key])


def thumbprint(certificate: x509.Certificate) -> str:
    return hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest().upper()  # noqa: S324


def _fingerprints(key) -> list[str]:
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    scalar = format(key.private_numbers().private_value, "x")
    body = "".join(pkcs8.splitlines()[1:-1])
    return [body[:40], base64.b64encode(der).decode()[:40], scalar, scalar.upper()]


def assert_no_private_key_anywhere(services, stack, device_keys) -> None:
    texts = []
    for hub in data.HUBS:
        registry = services.registry_manager(hub.host_name)
        from azure.iot.hub.models import QuerySpecification

        token = None
        while True:
            page = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), token, 1000)
            texts += [json.dumps(t.as_dict()) for t in page.items]
            token = page.continuation_token
            if not token:
                break
    for queue in ["certificate-renewals", "certificate-renewals-poison", "certificate-alerts", "security-alerts"]:
        texts += queue_texts(services, queue)
    for table in ["certificate_events", "provisioning_events", "certificates", "revocations"]:
        texts += [json.dumps(r, default=str) for r in services.database.fetch_all(f"SELECT * FROM {table}")]  # noqa: S608
    texts += [p.read_text(errors="replace") for p in (Path(stack.state_dir) / "logs").glob("*.log")]
    blob = "\n".join(texts)
    assert "PRIVATE KEY" not in blob
    for key in device_keys:
        for fingerprint in _fingerprints(key):
            assert fingerprint not in blob


def test_a_sensor_revoked_for_cause_is_locked_out_of_its_hub_and_refused_by_dps(stack, services, keys):
    """The revoked identity at the device's end: its connection with the certificate DPS registered answers
    "unauthorized" once the revocation disabled it on its hub, and registering with DPS again is refused by DPS
    itself (a disabled individual enrollment), so re-provisioning cannot bring it back."""
    device_id = serial_cn("REVOKED")
    with app_environment(stack.settings_path):
        dps = Scenario(services, stack.state_dir, ScenarioOptions()).dps([])
        lifecycle = Lifecycle(services)
        sensor = SimulatedSensor(device_id)
        sensor.install_certificate(lifecycle.issuer.issue(sensor.csr_pem(), actor="test:revoked").to_body())
    assert sensor.power_on(dps, str(ensure_tls(stack.state_dir).ca_cert)).status == "assigned"
    sensor.connection().report({"certificate": sensor.certificate_report()})  # its own certificate is accepted

    status, answer = http("POST", "/api/certificates/revoke", {"deviceId": device_id, "reason": "keyCompromise"},
                          key=keys["master"])
    assert status == 200, answer
    with pytest.raises(DeviceUnauthorized):
        sensor.connection().twin()
    sensor.release()
    again = dps.register(sensor.certificate, sensor.chain)
    assert (again.status, again.error_code) == ("disabled", "enrollment_disabled"), again
