"""Re-provisioning through DPS with a renewed certificate, on free ports (local/dps/simulator.py, linked_hub.py):
DPS creates X.509 devices as self-signed identities holding the leaf's thumbprint; a registration with a new
certificate updates that identity (same hub), moves it (another hub) or re-creates it (deleted), keeping or
resetting the twin as the enrollment's reprovision policy says; an enrollment group matches devices under its
secondary signing CA, which the service API emulator (local/dps/service.py) accepts on /enrollmentGroups with
If-Match, as Microsoft's "How to roll X.509 device certificates" has an operator add a renewed CA."""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from local.dps import service as dps_service
from local.dps.enrollments import Enrollment, ReprovisionPolicy
from local.dps.linked_hub import LinkedHub, thumbprint
from local.dps.simulator import DpsSimulator
from local.dps.store import EnrollmentStore
from local.iothub import HubConfig, RateLimits, TwinLimits, connection_string, create_app
from local.iothub.auth import make_sas
from local.json_client import JsonClient
from local.serve import free_port, serve_in_thread
from tests.pki_helpers import client_certificate

pytestmark = pytest.mark.integration
NOW = dt.datetime.now(dt.UTC)


# --- a PKI: root -> regional CA (and its renewal: same name, new key) -> devices -----------------------------


def _ca(subject: str, key, issuer_cert=None, issuer_key=None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer = issuer_key or key
    return (x509.CertificateBuilder().subject_name(name)
            .issuer_name(issuer_cert.subject if issuer_cert is not None else name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None if issuer_cert is None else 0),
                           critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
            .sign(signer, hashes.SHA256()))


class Ca:
    def __init__(self, subject: str, root: x509.Certificate, root_key) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = _ca(subject, self.key, root, root_key)

    def issue(self, cn: str) -> x509.Certificate:
        return client_certificate(cn, self.certificate, self.key, NOW)


class Pki:
    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _ca("Reprovision test root", self.root_key)
        self.ca = Ca("Regional CA west", self.root, self.root_key)
        self.renewed = Ca("Regional CA west", self.root, self.root_key)  # the renewal: same subject, new key


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --- two hubs, a webhook, the service API emulator -----------------------------------------------------------


def _hub(tls, tmp_path_factory, name: str):
    port = free_port()
    config = HubConfig(name=name, host_name=f"localhost:{port}", state_dir=tmp_path_factory.mktemp(name), port=port,
                       policies={"iothubowner": base64.b64encode(secrets.token_bytes(32)).decode()},
                       identity_signing_key=None, rate_limits=RateLimits(enabled=False), twin_limits=TwinLimits())
    return config, serve_in_thread(create_app(config), port, tls)


@pytest.fixture(scope="module")
def hubs(tls, tmp_path_factory):
    running = [_hub(tls, tmp_path_factory, n) for n in ("iothub-reprov-a", "iothub-reprov-b")]
    yield [config for config, _ in running]
    for _, server in running:
        server.server.config.timeout_graceful_shutdown = 1
        server.stop()


class Webhook:
    """Answers the hub in `target`; an initialTwin on first registrations only (as the product should, since an
    initialTwin in the answer overrides DPS's twin migration), or always when twin_on_reprovision is set."""

    def __init__(self, hub_host: str):
        self.target = hub_host
        self.twin = {"tags": {"stage": "initial"}, "properties": {"desired": {"interval": 60}}}
        self.twin_on_reprovision = False
        self.requests: list[dict] = []

    def app(self) -> Starlette:
        async def allocate(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(body)
            answer: dict = {"iotHubHostName": self.target}
            if self.twin_on_reprovision or "currentIotHubHostName" not in body["deviceRuntimeContext"]:
                answer["initialTwin"] = self.twin
            return JSONResponse(answer)

        return Starlette(routes=[Route("/api/allocate", allocate, methods=["POST"])])


@pytest.fixture
def webhook(hubs):
    hook = Webhook(hubs[0].host_name)
    port = free_port()
    server = serve_in_thread(hook.app(), port)
    hook.url = f"http://127.0.0.1:{port}/api/allocate"
    yield hook
    server.stop()


@pytest.fixture(scope="module")
def pki():
    return Pki()


@pytest.fixture
def dps_state(tmp_path) -> Path:
    return tmp_path / "state"


def simulator(pki, hubs, webhook, dps_state, policy: ReprovisionPolicy | None = None, groups=None,
              initial_twin: dict | None = None) -> DpsSimulator:
    if groups is None:
        groups = [Enrollment("sensors-west", pki.ca.certificate, [h.host_name for h in hubs], webhook.url,
                             reprovision=policy or ReprovisionPolicy(), initial_twin=initial_twin or {})]
    return DpsSimulator(groups, [h.host_name for h in hubs], [pki.root],
                        {h.host_name: connection_string(h) for h in hubs}, state_file=dps_state / "registrations.jsonl",
                        enrollment_store=EnrollmentStore(dps_state))


def link(hub) -> LinkedHub:
    return LinkedHub(connection_string(hub))


def cn() -> str:
    return f"sensor-temp-FAC02-SN{secrets.randbelow(10**8):08d}"


def authentication(hub, device_id: str) -> dict | None:
    device = link(hub).get_device(device_id)
    return device["authentication"] if device else None


def write_operator_twin(hub, device_id: str) -> None:
    """What happens to a twin after provisioning: tags and desired properties written by the back end."""
    response = JsonClient(f"https://{hub.host_name}", os.environ["REQUESTS_CA_BUNDLE"]).request(
        "PATCH", f"/twins/{device_id}", params={"api-version": "2021-04-12"},
        body={"tags": {"stage": "operated", "owner": "ops"}, "properties": {"desired": {"interval": 15}}},
        headers={"Authorization": make_sas(hub.host_name, hub.policies["iothubowner"], "iothubowner")})
    assert response.status == 200, response.data


def twin(hub, device_id: str) -> tuple[dict, dict]:
    found = link(hub).get_twin(device_id)
    desired = {k: v for k, v in found["properties"]["desired"].items() if not k.startswith("$")}
    return found.get("tags") or {}, desired


# --- X.509 identities as DPS creates them and re-provisioning -------------------------------------------------


def test_first_registration_creates_a_self_signed_identity_with_the_leaf_thumbprint(pki, hubs, webhook, dps_state):
    dps = simulator(pki, hubs, webhook, dps_state)
    leaf = pki.ca.issue(cn())
    result = dps.register(leaf, [pki.ca.certificate])
    assert result.status == "assigned", result
    assert (result.substatus, result.reprovisioned, result.identity_created) == ("initialAssignment", False, True)
    expected = hashes.Hash(hashes.SHA1())  # noqa: S303 - the thumbprint IoT Hub compares, not a signature
    expected.update(leaf.public_bytes(serialization.Encoding.DER))
    print_ = expected.finalize().hex().upper()
    assert result.thumbprint == thumbprint(leaf) == print_
    assert authentication(hubs[0], result.device_id) == {
        "type": "selfSigned", "symmetricKey": {"primaryKey": None, "secondaryKey": None},
        "x509Thumbprint": {"primaryThumbprint": print_, "secondaryThumbprint": print_}}
    assert twin(hubs[0], result.device_id) == ({"stage": "initial"}, {"interval": 60})


def test_a_new_certificate_updates_the_identity_in_place_and_keeps_the_twin(pki, hubs, webhook, dps_state):
    dps = simulator(pki, hubs, webhook, dps_state)
    device = cn()
    old, new = pki.ca.issue(device), pki.ca.issue(device)
    first = dps.register(old, [pki.ca.certificate])
    write_operator_twin(hubs[0], device)
    generation = link(hubs[0]).get_device(device)["generationId"]

    again = dps.register(new, [pki.ca.certificate])
    assert again.status == "assigned" and again.assigned_hub == first.assigned_hub == hubs[0].host_name
    assert (again.reprovisioned, again.identity_updated, again.identity_created, again.twin_reset) == (
        True, True, False, False)
    assert again.substatus == "reprovisionedToInitialAssignment" and again.previous_hub == hubs[0].host_name
    context = webhook.requests[-1]["deviceRuntimeContext"]
    assert (context["currentIotHubHostName"], context["currentDeviceId"]) == (hubs[0].host_name, device)
    prints = authentication(hubs[0], device)["x509Thumbprint"]
    assert prints["primaryThumbprint"] == thumbprint(new) != thumbprint(old)
    assert link(hubs[0]).get_device(device)["generationId"] == generation, "updated, not deleted and re-created"
    assert twin(hubs[0], device) == ({"stage": "operated", "owner": "ops"}, {"interval": 15})


def test_reset_to_initial_config_resets_the_twin(pki, hubs, webhook, dps_state):
    dps = simulator(pki, hubs, webhook, dps_state, ReprovisionPolicy(update_hub_assignment=True,
                                                                     migrate_device_data=False),
                    initial_twin={"tags": {"stage": "enrollment"}, "properties": {"desired": {"interval": 90}}})
    device = cn()
    dps.register(pki.ca.issue(device), [pki.ca.certificate])
    write_operator_twin(hubs[0], device)
    new = pki.ca.issue(device)
    again = dps.register(new, [pki.ca.certificate])
    assert (again.status, again.identity_updated, again.twin_reset) == ("assigned", True, True)
    assert authentication(hubs[0], device)["x509Thumbprint"]["primaryThumbprint"] == thumbprint(new)
    # the webhook's answer has no initialTwin this time: the initial configuration DPS kept from the first
    # assignment (the webhook's twin then, not the enrollment's) replaces tags and desired
    assert twin(hubs[0], device) == ({"stage": "initial"}, {"interval": 60})


def test_an_initial_twin_from_the_webhook_overrides_migration(pki, hubs, webhook, dps_state):
    dps = simulator(pki, hubs, webhook, dps_state)  # migrate data (the default policy)
    device = cn()
    dps.register(pki.ca.issue(device), [pki.ca.certificate])
    write_operator_twin(hubs[0], device)
    webhook.twin_on_reprovision = True
    webhook.twin = {"tags": {"stage": "from-webhook"}, "properties": {"desired": {"interval": 30}}}
    again = dps.register(pki.ca.issue(device), [pki.ca.certificate])
    assert again.twin_reset is True
    assert twin(hubs[0], device) == ({"stage": "from-webhook"}, {"interval": 30})


def test_never_reprovision_keeps_the_hub_but_updates_the_credential(pki, hubs, webhook, dps_state):
    dps = simulator(pki, hubs, webhook, dps_state, ReprovisionPolicy(update_hub_assignment=False,
                                                                     migrate_device_data=True))
    device = cn()
    dps.register(pki.ca.issue(device), [pki.ca.certificate])
    write_operator_twin(hubs[0], device)
    webhook.target = hubs[1].host_name
    new = pki.ca.issue(device)
    again = dps.register(new, [pki.ca.certificate])
    assert (again.status, again.assigned_hub, again.identity_updated) == ("assigned", hubs[0].host_name, True)
    assert link(hubs[1]).get_device(device) is None
    assert authentication(hubs[0], device)["x509Thumbprint"]["primaryThumbprint"] == thumbprint(new)
    assert twin(hubs[0], device) == ({"stage": "operated", "owner": "ops"}, {"interval": 15})


def test_a_hub_change_with_migrate_moves_the_device_and_its_twin(pki, hubs, webhook, dps_state):
    dps = simulator(pki, hubs, webhook, dps_state)
    device = cn()
    dps.register(pki.ca.issue(device), [pki.ca.certificate])
    write_operator_twin(hubs[0], device)
    webhook.target = hubs[1].host_name
    new = pki.ca.issue(device)
    moved = dps.register(new, [pki.ca.certificate])
    assert (moved.status, moved.assigned_hub, moved.previous_hub) == ("assigned", hubs[1].host_name,
                                                                      hubs[0].host_name)
    assert (moved.substatus, moved.identity_created, moved.twin_reset) == ("deviceDataMigrated", True, False)
    assert link(hubs[0]).get_device(device) is None, "DPS removes the device from the hub it leaves"
    assert authentication(hubs[1], device)["x509Thumbprint"]["primaryThumbprint"] == thumbprint(new)
    assert twin(hubs[1], device) == ({"stage": "operated", "owner": "ops"}, {"interval": 15})
    assert dps.assignments[device] == (hubs[1].host_name, device)


def test_a_device_deleted_from_its_hub_is_created_again(pki, hubs, webhook, dps_state):
    dps = simulator(pki, hubs, webhook, dps_state)
    device = cn()
    dps.register(pki.ca.issue(device), [pki.ca.certificate])
    assert link(hubs[0]).delete_device(device) is True
    new = pki.ca.issue(device)
    again = dps.register(new, [pki.ca.certificate])
    assert (again.status, again.reprovisioned, again.identity_created) == ("assigned", True, True)
    assert authentication(hubs[0], device)["x509Thumbprint"]["primaryThumbprint"] == thumbprint(new)
    assert twin(hubs[0], device) == ({"stage": "initial"}, {"interval": 60})


def test_the_simulator_state_survives_a_restart(pki, hubs, webhook, dps_state):
    device = cn()
    simulator(pki, hubs, webhook, dps_state).register(pki.ca.issue(device), [pki.ca.certificate])
    again = simulator(pki, hubs, webhook, dps_state).register(pki.ca.issue(device), [pki.ca.certificate])
    assert again.reprovisioned and again.identity_updated


# --- CA rotation in enrollment groups ---------------------------------------------------------------------------


def test_a_group_matches_a_device_under_its_secondary_ca_and_refuses_it_without(pki, hubs, webhook, dps_state):
    leaf = pki.renewed.issue(cn())
    without = Enrollment("sensors-west", pki.ca.certificate, [hubs[0].host_name], webhook.url)
    refused = simulator(pki, hubs, webhook, dps_state / "a", groups=[without]).register(
        leaf, [pki.renewed.certificate])
    assert (refused.status, refused.error_code) == ("failed", "unauthorized")

    rolled = Enrollment("sensors-west", pki.ca.certificate, [hubs[0].host_name], webhook.url,
                        secondary_ca_certificate=pki.renewed.certificate)
    dps = simulator(pki, hubs, webhook, dps_state / "b", groups=[rolled])
    assert dps.register(leaf, [pki.renewed.certificate]).enrollment == "group:sensors-west"
    assert dps.register(pki.ca.issue(cn()), [pki.ca.certificate]).status == "assigned"  # primary still counts


@pytest.fixture
def service_api(tls, dps_state):
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    port = free_port()
    host = f"localhost:{port}"
    server = serve_in_thread(dps_service.create_app(dps_state, None, host, {"owner": key}), port, tls)
    client = JsonClient(f"https://{host}", str(tls.ca_bundle))

    def call(method: str, path: str, body=None, if_match: str | None = None):
        headers = {"Authorization": make_sas(host, key, "owner")}
        if if_match is not None:
            headers["If-Match"] = if_match
        return client.request(method, path, params={"api-version": "2021-10-01"}, body=body, headers=headers)

    yield call
    server.stop()


def test_an_operator_adds_the_renewed_ca_as_the_group_secondary_through_the_service_api(
        pki, hubs, webhook, dps_state, service_api):
    group = {"enrollmentGroupId": "sensors-west", "allocationPolicy": "custom",
             "customAllocationDefinition": {"webhookUrl": webhook.url, "apiVersion": "2021-10-01"},
             "attestation": {"type": "x509", "x509": {"signingCertificates": {
                 "primary": {"certificate": pem(pki.ca.certificate)}}}}}
    created = service_api("PUT", "/enrollmentGroups/sensors-west", group)
    assert created.status == 200, created.data
    record = created.json()
    assert record["attestation"]["x509"]["signingCertificates"]["primary"]["info"]["sha1Thumbprint"] == thumbprint(
        pki.ca.certificate)
    assert "certificate" not in record["attestation"]["x509"]["signingCertificates"]["primary"]

    dps = simulator(pki, hubs, webhook, dps_state, groups=[])  # groups come from the service API's store only
    leaf = pki.renewed.issue(cn())
    assert dps.register(leaf, [pki.renewed.certificate]).status == "failed"

    # GET, add the secondary, PUT with If-Match: a stale etag is refused, the current one accepted
    current = service_api("GET", "/enrollmentGroups/sensors-west").json()
    current["attestation"]["x509"]["signingCertificates"]["secondary"] = {"certificate": pem(pki.renewed.certificate)}
    assert service_api("PUT", "/enrollmentGroups/sensors-west", current, '"stale"').status == 412
    updated = service_api("PUT", "/enrollmentGroups/sensors-west", current, current["etag"])
    assert updated.status == 200, updated.data
    slots = updated.json()["attestation"]["x509"]["signingCertificates"]
    assert slots["primary"]["info"]["sha1Thumbprint"] == thumbprint(pki.ca.certificate)
    assert slots["secondary"]["info"]["sha1Thumbprint"] == thumbprint(pki.renewed.certificate)
    assert updated.json()["etag"] != current["etag"]
    assert service_api("POST", "/enrollmentGroups/query", {"query": "*"}).json()[0]["enrollmentGroupId"] == (
        "sensors-west")

    result = dps.register(leaf, [pki.renewed.certificate])
    assert result.status == "assigned" and result.enrollment == "group:sensors-west"

    # once the old CA has expired: the secondary becomes the only one; the old CA's devices no longer match
    rolled = service_api("GET", "/enrollmentGroups/sensors-west").json()
    slots = rolled["attestation"]["x509"]["signingCertificates"]
    rolled["attestation"]["x509"]["signingCertificates"] = {"primary": slots["secondary"]}
    assert service_api("PUT", "/enrollmentGroups/sensors-west", rolled, rolled["etag"]).status == 200
    assert dps.register(pki.ca.issue(cn()), [pki.ca.certificate]).error_code == "unauthorized"
    assert dps.register(pki.renewed.issue(cn()), [pki.renewed.certificate]).status == "assigned"


def test_the_service_api_refuses_group_attestations_it_cannot_hold(pki, service_api):
    leaf = pki.ca.issue(cn())
    for x509_part, what in [({"signingCertificates": {"primary": {"certificate": pem(leaf)}}}, "CA certificate"),
                            ({"caReferences": {"primary": "root-west"}}, "caReferences"),
                            ({"clientCertificates": {"primary": {"certificate": pem(pki.ca.certificate)}}},
                             "signingCertificates")]:
        answer = service_api("PUT", "/enrollmentGroups/g1", {"enrollmentGroupId": "g1",
                                                             "attestation": {"type": "x509", "x509": x509_part}})
        assert answer.status == 400 and what in answer.json()["message"], answer.data
    assert service_api("GET", "/enrollmentGroups/g1").status == 404
