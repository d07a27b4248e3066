"""Revocation enforced at DPS, end to end on free ports: the function app's adapter (shared/dps.py) creates a
disabled individual enrollment in the DPS service API emulator (`python -m local.dps serve`, another process), and
the DPS simulator refuses that device with status "disabled" without calling the webhook, while another device of
the same enrollment group is still allocated; `python -m local.dps enrollments` lists the enrollment."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from local.azurite import port_open
from local.dps.enrollments import Enrollment
from local.dps.simulator import DpsSimulator
from local.dps.store import EnrollmentStore
from local.identity import issue_token
from local.iothub import HubConfig, RateLimits, TwinLimits, connection_string, create_app
from local.secrets import stack_secret
from local.serve import free_port, serve_in_thread
from shared.dps import DpsEnrollments
from tests.pki_helpers import client_certificate

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime.now(dt.UTC)


# --- a small PKI: root -> regional intermediate -> devices (what chain.py validates as DPS does) --------------


def _ca_cert(subject: str, key, issuer_cert=None, issuer_key=None, path_length=None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = issuer_cert.subject if issuer_cert is not None else name
    signer = issuer_key or key
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False))
    return builder.sign(signer, hashes.SHA256())


class Pki:
    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _ca_cert("Test root", self.root_key)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _ca_cert("Test intermediate west", self.ca_key, self.root, self.root_key, path_length=0)

    def issue(self, cn: str) -> x509.Certificate:
        return client_certificate(cn, self.ca, self.ca_key, NOW)


# --- the pieces, each on a free port -----------------------------------------------------------------------


class StackIdentity:
    """The stack identity endpoint's tokens (same signing key as the emulator process reads)."""

    def __init__(self, state_dir: Path):
        self.key = base64.b64decode(stack_secret(state_dir, "identity-signing-key"))

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        token, expires = issue_token(self.key, scopes[0])
        return AccessToken(token, expires)


@pytest.fixture(scope="module")
def dps_state(state_dir, tls, tmp_path_factory) -> Path:
    """A state dir of its own that trusts the session's TLS files (the emulator process serves them)."""
    own = tmp_path_factory.mktemp("dps-stack")
    shutil.copytree(state_dir / "tls", own / "tls")
    return own


@pytest.fixture(scope="module")
def dps_service(dps_state):
    """`python -m local.dps serve` in its own process, as the stack would start it."""
    port = free_port()
    log = (dps_state / "dps-service.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "local.dps", "serve", "--state-dir", str(dps_state),
                             "--port", str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"DPS emulator did not start: {(dps_state / 'dps-service.log').read_text()}")
            time.sleep(0.05)
        yield f"localhost:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def hub(tls, tmp_path_factory):
    port = free_port()
    config = HubConfig(name="iothub-dps-test", host_name=f"localhost:{port}",
                       state_dir=tmp_path_factory.mktemp("hub"), port=port,
                       policies={"iothubowner": base64.b64encode(secrets.token_bytes(32)).decode()},
                       identity_signing_key=None, rate_limits=RateLimits(enabled=False), twin_limits=TwinLimits())
    server = serve_in_thread(create_app(config), port, tls)
    yield config
    server.server.config.timeout_graceful_shutdown = 1
    server.stop()


class Webhook:
    """A custom allocation webhook that records who it was asked about and answers the one hub."""

    def __init__(self, hub_host: str):
        self.asked: list[str] = []
        self.requests: list[dict] = []
        self.hub_host = hub_host

    def app(self) -> Starlette:
        async def allocate(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(body)
            self.asked.append(body["deviceRuntimeContext"]["registrationId"])
            return JSONResponse({"iotHubHostName": self.hub_host, "initialTwin": {"tags": {"test": True}}})

        return Starlette(routes=[Route("/api/allocate", allocate, methods=["POST"])])


@pytest.fixture(scope="module")
def webhook(hub):
    hook = Webhook(hub.host_name)
    port = free_port()
    server = serve_in_thread(hook.app(), port)
    hook.url = f"http://127.0.0.1:{port}/api/allocate"
    yield hook
    server.stop()


@pytest.fixture(scope="module")
def pki():
    return Pki()


@pytest.fixture(scope="module")
def simulator(pki, hub, webhook, dps_state, tmp_path_factory):
    group = Enrollment("sensors-west", pki.ca, [hub.host_name], webhook.url)
    return DpsSimulator([group], [hub.host_name], [pki.root], {hub.host_name: connection_string(hub)},
                        state_file=tmp_path_factory.mktemp("sim") / "registrations.jsonl",
                        enrollment_store=EnrollmentStore(dps_state))


@pytest.fixture(scope="module")
def adapter(dps_service, dps_state):
    client = DpsEnrollments(dps_service, StackIdentity(dps_state))
    yield client
    client.close()


def cn() -> str:
    return f"sensor-temp-FAC02-SN{secrets.randbelow(10**8):08d}"


# --- the tests -----------------------------------------------------------------------------------------------


def test_a_disallowed_device_is_refused_by_dps_while_its_group_still_allocates_others(
        adapter, simulator, webhook, pki, hub):
    revoked_cn, good_cn = cn(), cn()
    revoked, good = pki.issue(revoked_cn), pki.issue(good_cn)

    before = simulator.register(revoked, [pki.ca])  # the group allocates it while nothing disallows it
    assert before.status == "assigned" and before.enrollment == "group:sensors-west"

    outcome = adapter.disallow(revoked_cn, revoked)  # what the Revoker does for a revocation for cause
    assert outcome.changed and outcome.enrollment.disabled

    asked = len(webhook.asked)
    refused = simulator.register(revoked, [pki.ca])
    assert (refused.status, refused.error_code) == ("disabled", "enrollment_disabled")
    assert refused.enrollment == f"individual:{revoked_cn}" and refused.assigned_hub is None
    assert len(webhook.asked) == asked, "DPS refuses a disabled enrollment without calling the webhook"

    allocated = simulator.register(good, [pki.ca])
    assert allocated.status == "assigned" and allocated.assigned_hub == hub.host_name
    assert allocated.enrollment == "group:sensors-west"
    assert webhook.asked[-1] == good_cn


def test_a_re_issued_device_comes_back_once_allowed(adapter, simulator, webhook, pki):
    device = cn()
    old, new = pki.issue(device), pki.issue(device)
    adapter.disallow(device, old)
    # The disabled enrollment matches by registration ID: the new certificate is refused too, until allowed back.
    assert simulator.register(new, [pki.ca]).status in ("disabled", "failed")
    assert simulator.register(old, [pki.ca]).status == "disabled"
    assert adapter.allow(device) is True
    back = simulator.register(new, [pki.ca])
    assert back.status == "assigned" and webhook.asked[-1] == device


def test_the_enrollments_listing_shows_the_disabled_enrollment(adapter, pki, dps_state):
    device = cn()
    cert = pki.issue(device)
    adapter.disallow(device, cert)
    listing = subprocess.run([sys.executable, "-m", "local.dps", "enrollments", "--state-dir", str(dps_state)],
                             cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    line = next(line for line in listing.splitlines() if line.startswith(device))
    assert line.split()[1] == "disabled" and format(cert.serial_number, "X") in line
    as_json = subprocess.run([sys.executable, "-m", "local.dps", "enrollments", "--state-dir", str(dps_state),
                              "--json"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    row = {r["registrationId"]: r for r in json.loads(as_json)}[device]
    assert row["sha256Thumbprint"] == cert.fingerprint(hashes.SHA256()).hex().upper()


def test_an_enabled_individual_enrollment_from_the_service_api_allocates_through_its_own_webhook(
        adapter, simulator, webhook, pki, hub):
    gateway = f"sensor-gw-FAC02-SN{secrets.randbelow(10**8):08d}"
    cert = pki.issue(gateway)
    adapter.create_or_update(gateway, {
        "registrationId": gateway, "capabilities": {"iotEdge": True}, "allocationPolicy": "custom",
        "customAllocationDefinition": {"webhookUrl": webhook.url, "apiVersion": "2021-10-01"},
        "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {
            "certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}}}}})
    result = simulator.register(cert, [pki.ca])
    assert result.status == "assigned" and result.enrollment == f"individual:{gateway}"
    assert webhook.requests[-1]["individualEnrollment"]["registrationId"] == gateway
    assert webhook.requests[-1]["individualEnrollment"]["capabilities"] == {"iotEdge": True}
    other = simulator.register(pki.issue(gateway), [pki.ca])  # same CN, a certificate the enrollment does not pin
    assert (other.status, other.error_code) == ("failed", "unauthorized")
