"""shared/dps.py, the DPS service API adapter, against the local DPS emulator over TLS: disallow (a disabled
individual enrollment with the device's certificate), allow back (delete), idempotence, etags, auth and retries."""

from __future__ import annotations

import base64
import os
import secrets
import ssl
import time

import httpx
import pytest
from azure.core.credentials import AccessToken
from cryptography.hazmat.primitives import hashes, serialization

from local.dps.service import OWNER_POLICY, Faults, create_app
from local.dps.store import EnrollmentStore
from local.identity import issue_token
from local.serve import free_port, serve_in_thread
from shared.config import SettingError, Settings
from shared.dps import (
    SCOPE,
    DpsAccessDenied,
    DpsEnrollments,
    DpsUnavailable,
    EnrollmentNotFound,
    IndividualEnrollment,
    PreconditionFailed,
    disallow_body,
    dps_configured,
    dps_enrollments,
    should_disallow,
)
from shared.retry import RetryPolicy
from tests.pki_helpers import make_ca

SIGNING_KEY = secrets.token_bytes(32)
OWNER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
FAST = RetryPolicy(attempts=3, base_s=0.01, budget_s=10, max_backoff_s=0.05)


class LocalIdentity:
    """A TokenCredential whose tokens the emulator accepts (the stack identity endpoint's signing key)."""

    def __init__(self, key: bytes = SIGNING_KEY, resource: str | None = None):
        self.key = key
        self.resource = resource
        self.scopes: list[str] = []

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        self.scopes += scopes
        token, expires = issue_token(self.key, self.resource or scopes[0])
        return AccessToken(token, expires)


class Emulator:
    def __init__(self, state_dir, port, faults, server):
        self.state_dir = state_dir
        self.port = port
        self.host = f"localhost:{port}"
        self.faults = faults
        self.server = server


@pytest.fixture(scope="module")
def emulator(tls, tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("dps-state")
    faults = Faults()
    port = free_port()
    app = create_app(state_dir, SIGNING_KEY, f"localhost:{port}", {OWNER_POLICY: OWNER_KEY}, faults)
    server = serve_in_thread(app, port, tls)
    yield Emulator(state_dir, port, faults, server)
    server.server.config.timeout_graceful_shutdown = 1  # the adapter's pool may still hold a keep-alive
    server.stop()


@pytest.fixture
def dps(emulator):
    emulator.faults.clear()
    client = DpsEnrollments(emulator.host, LocalIdentity(), policy=FAST)
    yield client
    client.close()


@pytest.fixture(scope="module")
def ca():
    return make_ca("intermediate-ca-west", "west")


def cn() -> str:
    return f"sensor-temp-FAC03-SN{secrets.randbelow(10**8):08d}"


def pem(cert) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def attestation(cert) -> dict:
    return {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem(cert)}}}}


def sha256(cert) -> str:
    return cert.fingerprint(hashes.SHA256()).hex().upper()


def raw(emulator, method, path, **kwargs) -> httpx.Response:
    """A request as is, without the adapter (the `tls` fixture made REQUESTS_CA_BUNDLE trust the emulator)."""
    context = ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])
    with httpx.Client(base_url=f"https://{emulator.host}", verify=context, timeout=10) as client:
        return client.request(method, path, **kwargs)


def test_disallow_creates_a_disabled_individual_enrollment_with_the_device_certificate(dps, emulator, ca):
    device = cn()
    cert = ca.issue(device)
    outcome = dps.disallow(device, pem(cert))
    assert outcome.changed
    enrollment = dps.get(device)
    assert enrollment.disabled and enrollment.attestation_type == "x509"
    assert enrollment.registration_id == device and enrollment.device_id == device
    assert enrollment.primary.sha256_thumbprint == sha256(cert)
    assert enrollment.primary.serial_number == format(cert.serial_number, "X")
    assert enrollment.etag and enrollment.created and enrollment.updated
    assert "certificate" not in enrollment.raw["attestation"]["x509"]["clientCertificates"]["primary"]
    # What DPS keeps to attest devices (the simulator reads it): the certificate itself.
    stored = EnrollmentStore(emulator.state_dir).get(device)
    assert stored["certificates"]["primary"] == pem(cert)


def test_disallow_is_idempotent_and_a_newer_certificate_replaces_the_pinned_one(dps, ca):
    device = cn()
    first = ca.issue(device)
    created = dps.disallow(device, pem(first)).enrollment
    again = dps.disallow(device, first.public_bytes(serialization.Encoding.DER))
    assert not again.changed and again.enrollment.etag == created.etag
    renewed = ca.issue(device)
    replaced = dps.disallow(device, renewed)
    assert replaced.changed and replaced.enrollment.etag != created.etag
    assert replaced.enrollment.pins(renewed) and replaced.enrollment.disabled
    assert replaced.enrollment.created == created.created


def test_allow_back_deletes_the_disabled_enrollment_once(dps, ca):
    device = cn()
    dps.disallow(device, pem(ca.issue(device)))
    assert dps.allow(device) is True
    assert dps.find(device) is None
    assert dps.allow(device) is False
    with pytest.raises(EnrollmentNotFound):
        dps.get(device)


def test_allow_leaves_an_enabled_enrollment_alone(dps, ca):
    device = cn()
    body = {"registrationId": device, "provisioningStatus": "enabled", "attestation": attestation(ca.issue(device))}
    dps.create_or_update(device, body)
    assert dps.allow(device) is False
    assert dps.get(device).provisioning_status == "enabled"


def test_disallow_turns_an_existing_enrollment_off_and_keeps_its_settings(dps, ca):
    gateway = f"sensor-gw-FAC01-SN{secrets.randbelow(10**8):08d}"
    body = {"registrationId": gateway, "capabilities": {"iotEdge": True}, "allocationPolicy": "custom",
            "customAllocationDefinition": {"webhookUrl": "https://app.example/api/allocate",
                                           "apiVersion": "2021-10-01"},
            "attestation": attestation(ca.issue(gateway))}
    enabled = dps.create_or_update(gateway, body)
    revoked = ca.issue(gateway)
    disabled = dps.disallow(gateway, revoked).enrollment
    assert disabled.disabled and disabled.pins(revoked) and disabled.etag != enabled.etag
    assert disabled.raw["capabilities"] == {"iotEdge": True}
    assert disabled.raw["customAllocationDefinition"]["webhookUrl"] == "https://app.example/api/allocate"


def test_a_certificate_of_another_device_is_refused_before_any_call(dps, emulator, ca):
    with pytest.raises(ValueError, match="is not the registration ID"):
        dps.disallow(cn(), pem(ca.issue(cn())))


def test_requests_without_valid_credentials_are_401(emulator, ca):
    device = cn()
    answer = raw(emulator, "GET", f"/enrollments/{device}", params={"api-version": "2021-10-01"})
    assert answer.status_code == 401
    assert answer.json()["errorCode"] == 401002 and answer.headers["x-ms-error-code"] == "401002"
    assert {"trackingId", "message", "timestampUtc"} <= set(answer.json())
    put = raw(emulator, "PUT", f"/enrollments/{device}", params={"api-version": "2021-10-01"},
              json={"registrationId": device})
    assert put.status_code == 401
    forged = DpsEnrollments(emulator.host, LocalIdentity(key=secrets.token_bytes(32)), policy=FAST)
    with pytest.raises(DpsAccessDenied, match="401"):
        forged.disallow(device, pem(ca.issue(device)))
    wrong_audience = DpsEnrollments(emulator.host, LocalIdentity(resource="https://vault.azure.net"), policy=FAST)
    with pytest.raises(DpsAccessDenied):
        wrong_audience.find(device)
    for client in (forged, wrong_audience):
        client.close()


def test_the_adapter_asks_for_the_dps_scope(emulator):
    identity = LocalIdentity()
    client = DpsEnrollments(emulator.host, identity, policy=FAST)
    assert client.find(cn()) is None
    assert identity.scopes == [SCOPE] == ["https://azure-devices-provisioning.net/.default"]
    client.close()


def test_a_sas_connection_string_works_and_a_wrong_key_is_refused(emulator, ca):
    device = cn()
    good = DpsEnrollments.from_connection_string(
        f"HostName={emulator.host};SharedAccessKeyName={OWNER_POLICY};SharedAccessKey={OWNER_KEY}", policy=FAST)
    assert good.disallow(device, pem(ca.issue(device))).changed
    bad = DpsEnrollments.from_connection_string(
        f"HostName={emulator.host};SharedAccessKeyName={OWNER_POLICY};"
        f"SharedAccessKey={base64.b64encode(secrets.token_bytes(32)).decode()}", policy=FAST)
    with pytest.raises(DpsAccessDenied):
        bad.get(device)
    for client in (good, bad):
        client.close()


def test_a_missing_enrollment_is_not_found(dps):
    device = cn()
    with pytest.raises(EnrollmentNotFound):
        dps.get(device)
    with pytest.raises(EnrollmentNotFound):
        dps.delete(device)
    assert dps.find(device) is None


def test_a_stale_etag_is_a_failed_precondition(dps, ca):
    device = cn()
    first = dps.disallow(device, pem(ca.issue(device))).enrollment
    second = dps.disallow(device, pem(ca.issue(device))).enrollment  # written over first's etag
    assert second.etag != first.etag
    stale_body = {"registrationId": device, "attestation": attestation(ca.issue(device))}
    with pytest.raises(PreconditionFailed):
        dps.create_or_update(device, stale_body, etag=first.etag)
    with pytest.raises(PreconditionFailed):
        dps.delete(device, etag=first.etag)
    assert dps.get(device).etag == second.etag
    dps.delete(device, etag=second.etag)
    assert dps.find(device) is None


def test_a_503_is_retried_with_its_retry_after(emulator, ca):
    slept: list[float] = []
    client = DpsEnrollments(emulator.host, LocalIdentity(), policy=FAST, sleep=slept.append)
    emulator.faults.clear()
    served_before = emulator.faults.served
    emulator.faults.fail_next(2, status=503, retry_after="2")
    device = cn()
    assert client.disallow(device, pem(ca.issue(device))).changed
    assert emulator.faults.served - served_before == 2
    assert len(slept) == 2 and all(2 <= s <= 2.5 for s in slept)  # Retry-After, plus at most a quarter
    client.close()


def test_a_503_that_outlasts_the_budget_surfaces_as_transient_with_retry_after(emulator):
    slept: list[float] = []
    client = DpsEnrollments(emulator.host, LocalIdentity(), policy=FAST, sleep=slept.append)
    emulator.faults.clear()
    served_before = emulator.faults.served
    emulator.faults.fail_next(10, status=503, retry_after="7")
    try:
        with pytest.raises(DpsUnavailable) as unavailable:
            client.get(cn())
    finally:
        emulator.faults.clear()
        client.close()
    assert unavailable.value.retry_after_s == 7
    assert "503" in unavailable.value.reason
    assert emulator.faults.served - served_before == FAST.attempts and len(slept) == FAST.attempts - 1


def test_throttling_is_retried_too(emulator):
    client = DpsEnrollments(emulator.host, LocalIdentity(), policy=FAST, sleep=lambda s: None)
    emulator.faults.clear()
    emulator.faults.fail_next(1, status=429, retry_after="1")
    assert client.find(cn()) is None
    client.close()


def test_an_unreachable_service_is_transient_and_bounded_in_time():
    client = DpsEnrollments(f"localhost:{free_port()}", LocalIdentity(), policy=FAST, connect_timeout_s=1,
                            sleep=lambda s: None)
    started = time.monotonic()
    with pytest.raises(DpsUnavailable, match="ServiceRequestError"):
        client.find(cn())
    assert time.monotonic() - started < 5
    client.close()


def test_list_pages_through_every_enrollment(dps, ca):
    devices = [cn() for _ in range(3)]
    for device in devices:
        dps.disallow(device, pem(ca.issue(device)))
    listed = dps.list_enrollments(page_size=2)
    assert set(devices) <= {e.registration_id for e in listed}
    assert len({e.registration_id for e in listed}) == len(listed)


def test_disallow_many_reports_each_device(dps, ca):
    good, bad = cn(), cn()
    good_cert = pem(ca.issue(good))
    report = dps.disallow_many([(good, good_cert), (bad, pem(ca.issue(cn())))])
    assert report.disallowed == [good] and list(report.failed) == [bad] and not report.not_attempted
    again = dps.disallow_many([(good, good_cert)], deadline_s=30)
    assert again.unchanged == [good] and not again.disallowed
    late_device = cn()
    late = dps.disallow_many([(late_device, pem(ca.issue(late_device)))], deadline_s=0)
    assert late.not_attempted == [late_device] and not late.disallowed


def test_revocation_reasons_that_keep_a_device_out():
    assert all(should_disallow(r) for r in ("keyCompromise", "cessationOfOperation", "affiliationChanged",
                                            "privilegeWithdrawn", "unspecified"))
    assert not should_disallow("superseded")


def test_settings():
    assert not dps_configured(Settings({}))
    with pytest.raises(SettingError, match="DPS_SERVICE_HOSTNAME"):
        dps_enrollments(Settings({}), LocalIdentity())
    with pytest.raises(SettingError, match="no scheme"):
        dps_enrollments(Settings({"DPS_SERVICE_HOSTNAME": "https://dps.azure-devices-provisioning.net/"}),
                        LocalIdentity())
    client = dps_enrollments(Settings({"DPS_SERVICE_HOSTNAME": "dps-x.azure-devices-provisioning.net"}),
                             LocalIdentity())
    assert client.endpoint == "https://dps-x.azure-devices-provisioning.net"
    conn = f"HostName=localhost:1;SharedAccessKeyName={OWNER_POLICY};SharedAccessKey={OWNER_KEY}"
    sas = dps_enrollments(Settings({"DPS_CONNECTION_STRING": conn, "DPS_SERVICE_HOSTNAME": "ignored"}), None)
    assert sas.host_name == "localhost:1" and dps_configured(Settings({"DPS_CONNECTION_STRING": conn}))
    with pytest.raises(SettingError, match="DPS_CONNECTION_STRING"):
        dps_enrollments(Settings({"DPS_CONNECTION_STRING": "HostName=x"}), None)


def test_disallow_decides_again_when_someone_wrote_between_its_read_and_its_write(dps, ca):
    device = cn()
    dps.disallow(device, pem(ca.issue(device)))
    stale = dps.get(device)
    dps.disallow(device, pem(ca.issue(device)))  # another writer: the etag moves on
    reads = []
    real_find = dps.find

    def find(registration_id, budget=None):
        reads.append(registration_id)
        return stale if len(reads) == 1 else real_find(registration_id, budget)

    dps.find = find
    final = ca.issue(device)
    outcome = dps.disallow(device, final)  # first PUT over the stale etag: 412, then read and write again
    assert outcome.changed and outcome.enrollment.pins(final) and len(reads) == 2


def test_the_disallow_body_keeps_a_previous_certificate_the_service_sent_back(ca):
    device = cn()
    old, new = ca.issue(device), ca.issue(device)
    current = IndividualEnrollment.from_json({
        "registrationId": device, "provisioningStatus": "enabled", "etag": '"e1"', "deviceId": device,
        "capabilities": {"iotEdge": True}, "createdDateTimeUtc": "2026-01-01T00:00:00Z",
        "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem(old)}}}}})
    body = disallow_body(device, new, current=current)
    certificates = body["attestation"]["x509"]["clientCertificates"]
    assert certificates["primary"]["certificate"] == pem(new) and certificates["secondary"]["certificate"] == pem(old)
    assert body["provisioningStatus"] == "disabled" and body["etag"] == '"e1"'
    assert body["capabilities"] == {"iotEdge": True} and "createdDateTimeUtc" not in body
    fresh = disallow_body(device, new)
    assert fresh == {"registrationId": device, "deviceId": device, "provisioningStatus": "disabled",
                     "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {
                         "certificate": pem(new)}}}}}
