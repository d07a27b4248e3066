"""The IoT Hub emulator's device side: devices authenticate by the certificate they present (mutual TLS),
matched against their registry identity; device-to-cloud messages over IoT Hub's HTTPS device API."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import ssl
import time
import uuid
from pathlib import Path

import httpx
import pytest
from azure.iot.hub import IoTHubRegistryManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from local.fleet.device_link import DeviceConnection, DeviceUnauthorized
from local.iothub import HubConfig, RateLimits, connection_string, create_app
from local.iothub.auth import make_sas
from local.iothub.devices import NEVER
from local.iothub.store import HubStore
from local.json_client import HttpError
from local.serve import free_port, serve_in_thread

pytestmark = pytest.mark.integration

OWNER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
API = {"api-version": "2021-04-12"}
D2C = {"api-version": "2020-03-13"}


# -- a device PKI: root (file) -> intermediate -> device certificates ---------------------------------------
class Ca:
    def __init__(self, name: str, parent: Ca | None = None):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(self.name)
            .issuer_name(parent.name if parent else self.name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None if parent is None else 0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(parent.key if parent else self.key, hashes.SHA256())
        )

    def issue(self, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def write_pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = Ca("Test Device Root CA")
    intermediate = Ca("Test Device Intermediate CA", root)
    directory = tmp_path_factory.mktemp("pki")
    return {"root": root, "intermediate": intermediate, "root_file": write_pem(directory / "root-ca.pem",
                                                                                 root.certificate)}


@pytest.fixture(scope="module")
def hub(tls, pki, tmp_path_factory):
    port = free_port()
    config = HubConfig(name="iothub-devauth-local", host_name=f"localhost:{port}",
                       state_dir=tmp_path_factory.mktemp("hub"), port=port, policies={"iothubowner": OWNER_KEY},
                       rate_limits=RateLimits(enabled=False))
    app = create_app(config)
    server = serve_in_thread(app, port, tls, client_ca=[pki["root_file"]])
    yield app.state.hub
    server.stop()


@pytest.fixture(scope="module")
def registry(hub) -> IoTHubRegistryManager:
    """The service SDK: it presents no client certificate, and must keep working against the mTLS server."""
    manager = IoTHubRegistryManager.from_connection_string(connection_string(hub.config))
    yield manager
    manager.protocol.close()


def unique(prefix: str = "sensor-temp-FAC01") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def connect(hub, tls, pki, cert, key, device_id: str | None = None) -> DeviceConnection:
    return DeviceConnection(hub.config.host_name, cert, key, [pki["intermediate"].certificate], tls.ca_cert,
                            device_id=device_id)


def thumb(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - IoT Hub's thumbprint is SHA-1


def plain_client(hub, tls, **kwargs) -> httpx.Client:
    """A caller that presents no client certificate."""
    context = ssl.create_default_context(cafile=str(tls.ca_bundle))
    return httpx.Client(base_url=f"https://{hub.config.host_name}", verify=context, timeout=10, **kwargs)


def error_code(body: bytes) -> str:
    import json

    return json.loads(body)["Message"].split(";")[0].removeprefix("ErrorCode:")


# -- X.509 thumbprint (selfSigned) identities -----------------------------------------------------------------
def test_device_with_its_registered_certificate_reads_reports_and_sends(hub, registry, tls, pki):
    device_id = unique()
    cert, key = pki["intermediate"].issue(device_id)
    registry.create_device_with_x509(device_id, thumb(cert), None, "enabled")
    with connect(hub, tls, pki, cert, key) as device:
        assert device.device_id == device_id and device.thumbprint == thumb(cert).upper()
        assert "$version" in device.twin()["desired"]
        assert device.report({"fw": "1.0"})["reported"]["fw"] == "1.0"
        device.send_event({"temperature": 21.5})
    assert registry.get_twin(device_id).properties.reported["fw"] == "1.0"


def test_secondary_thumbprint_is_accepted_and_lowercase_thumbprints_match(hub, registry, tls, pki):
    device_id = unique()
    primary, _ = pki["intermediate"].issue(device_id)
    secondary, key = pki["intermediate"].issue(device_id)
    answer = plain_client(hub, tls).put(
        f"/devices/{device_id}", params=API,
        headers={"Authorization": make_sas(hub.config.host_name, OWNER_KEY, "iothubowner")},
        json={"deviceId": device_id, "authentication": {"type": "selfSigned", "x509Thumbprint": {
            "primaryThumbprint": thumb(primary).lower(), "secondaryThumbprint": thumb(secondary).lower()}}})
    assert answer.status_code == 200, answer.text
    with connect(hub, tls, pki, secondary, key) as device:
        assert device.report({"slot": "secondary"})["reported"]["slot"] == "secondary"


def test_another_certificate_of_the_same_pki_and_cn_is_refused_401(hub, registry, tls, pki):
    device_id = unique()
    registered, _ = pki["intermediate"].issue(device_id)
    other, other_key = pki["intermediate"].issue(device_id)  # same CN, same CA: only the thumbprint differs
    registry.create_device_with_x509(device_id, thumb(registered), None, "enabled")
    with connect(hub, tls, pki, other, other_key) as device, pytest.raises(DeviceUnauthorized) as refused:
        device.twin()
    assert refused.value.status == 401 and error_code(refused.value.body) == "IotHubUnauthorizedAccess"
    with connect(hub, tls, pki, other, other_key) as device, pytest.raises(DeviceUnauthorized):
        device.send_event(b"x")
    assert registry.get_device(device_id).last_activity_time.year == 1  # refused calls are no activity


def test_re_provisioned_identity_refuses_the_old_certificate_and_accepts_the_new(hub, registry, tls, pki):
    device_id = unique()
    old, old_key = pki["intermediate"].issue(device_id)
    new, new_key = pki["intermediate"].issue(device_id)
    created = registry.create_device_with_x509(device_id, thumb(old), None, "enabled")
    with connect(hub, tls, pki, old, old_key) as before, connect(hub, tls, pki, new, new_key) as after:
        before.report({"cert": "old"})
        with pytest.raises(DeviceUnauthorized):
            after.twin()
        # What the DPS simulator does on re-provisioning: the service API's PUT /devices/{id} with If-Match.
        updated = registry.update_device_with_x509(device_id, created.etag, thumb(new), None, "enabled")
        assert updated.etag != created.etag
        assert updated.authentication.x509_thumbprint.primary_thumbprint == thumb(new).upper()
        with pytest.raises(DeviceUnauthorized):  # the same open connection: authentication is per request
            before.twin()
        assert after.report({"cert": "new"})["reported"]["cert"] == "new"


# -- X.509 CA identities -----------------------------------------------------------------------------------
def test_ca_device_is_known_by_the_cn_of_a_certificate_chaining_to_the_root(hub, registry, tls, pki):
    device_id, other_id = unique(), unique()
    registry.create_device_with_certificate_authority(device_id, "enabled")
    registry.create_device_with_certificate_authority(other_id, "enabled")
    cert, key = pki["intermediate"].issue(device_id)
    with connect(hub, tls, pki, cert, key) as device:
        assert device.report({"ok": True})["reported"]["ok"] is True
    with connect(hub, tls, pki, cert, key, device_id=other_id) as impostor, pytest.raises(DeviceUnauthorized):
        impostor.report({"ok": True})  # a valid certificate, but of another device
    assert "ok" not in registry.get_twin(other_id).properties.reported


def test_certificate_from_an_untrusted_ca_is_refused_at_tls(hub, registry, tls, pki):
    device_id = unique()
    registry.create_device_with_certificate_authority(device_id, "enabled")
    stranger = Ca("Someone Else's CA")
    cert, key = stranger.issue(device_id)
    with DeviceConnection(hub.config.host_name, cert, key, [], tls.ca_cert) as device:
        with pytest.raises(DeviceUnauthorized):
            device.twin()


# -- refusals common to every identity ----------------------------------------------------------------------
def test_no_certificate_and_service_credentials_are_refused_on_device_routes(hub, registry, tls, pki):
    device_id = unique()
    registry.create_device_with_certificate_authority(device_id, "enabled")
    owner = make_sas(hub.config.host_name, OWNER_KEY, "iothubowner")
    with plain_client(hub, tls) as anonymous, plain_client(hub, tls, headers={"Authorization": owner}) as service:
        answers = [
            anonymous.get(f"/devices/{device_id}/twin", params=API),
            service.get(f"/devices/{device_id}/twin", params=API),
            service.patch(f"/devices/{device_id}/twin/properties/reported", params=API, json={"a": 1}),
            service.post(f"/devices/{device_id}/messages/events", params=D2C, content=b"{}"),
        ]
        assert service.get(f"/twins/{device_id}", params=API).status_code == 200  # the service API still works
    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.headers["iothub-errorcode"] == "IotHubUnauthorizedAccess"


def test_sas_device_uses_its_own_token_and_not_a_policy(hub, registry, tls, pki):
    device_id = unique("sensor-sas")
    keys = registry.create_device_with_sas(device_id, None, None, "enabled").authentication.symmetric_key
    token = make_sas(f"{hub.config.host_name}/devices/{device_id}", keys.primary_key)
    with plain_client(hub, tls, headers={"Authorization": token}) as device:
        assert device.patch(f"/devices/{device_id}/twin/properties/reported", params=API,
                            json={"fw": "2"}).status_code == 200
        assert device.post(f"/devices/{device_id}/messages/events", params=D2C, content=b"hi").status_code == 204
    wrong = make_sas(f"{hub.config.host_name}/devices/{device_id}", base64.b64encode(b"k" * 32).decode())
    owner = make_sas(hub.config.host_name, OWNER_KEY, "iothubowner")
    for token in (wrong, owner):
        with plain_client(hub, tls, headers={"Authorization": token}) as caller:
            assert caller.get(f"/devices/{device_id}/twin", params=API).status_code == 401


def test_disabled_and_deleted_devices_are_refused(hub, registry, tls, pki):
    device_id = unique()
    cert, key = pki["intermediate"].issue(device_id)
    created = registry.create_device_with_x509(device_id, thumb(cert), None, "enabled")
    with connect(hub, tls, pki, cert, key) as device:
        device.twin()
        disabled = registry.update_device_with_x509(device_id, created.etag, thumb(cert), None, "disabled")
        with pytest.raises(DeviceUnauthorized):
            device.twin()
        enabled = registry.update_device_with_x509(device_id, disabled.etag, thumb(cert), None, "enabled")
        device.twin()
        registry.delete_device(device_id, enabled.etag)
        with pytest.raises(DeviceUnauthorized):
            device.send_event(b"after delete")


# -- device-to-cloud messages ------------------------------------------------------------------------------
def stats(hub, tls, device_id: str) -> dict:
    owner = make_sas(hub.config.host_name, OWNER_KEY, "iothubowner")
    with plain_client(hub, tls, headers={"Authorization": owner}) as service:
        answer = service.get(f"/devices/{device_id}/messages/stats", params=API)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_device_to_cloud_messages_answer_204_and_are_counted_with_their_properties(hub, registry, tls, pki):
    device_id = unique()
    cert, key = pki["intermediate"].issue(device_id)
    registry.create_device_with_x509(device_id, thumb(cert), None, "enabled")
    assert stats(hub, tls, device_id)["messageCount"] == 0
    with connect(hub, tls, pki, cert, key) as device:
        device.send_event({"t": 1})
        device.send_event(b"\x00\x01binary", properties={"kind": "raw", "seq": 2})
    counted = stats(hub, tls, device_id)
    assert counted["messageCount"] == 2 and counted["totalBytes"] == len(b'{"t":1}') + 8
    assert counted["lastProperties"] == {"kind": "raw", "seq": "2"}
    assert counted["firstMessageTime"] <= counted["lastMessageTime"]
    owner = make_sas(hub.config.host_name, OWNER_KEY, "iothubowner")
    with plain_client(hub, tls, headers={"Authorization": owner}) as service:
        totals = service.get("/statistics/messages", params=API).json()
    assert totals["messageCount"] >= 2 and totals["devicesWithMessages"] >= 1


def test_device_to_cloud_message_over_256_kb_is_413_and_not_counted(hub, registry, tls, pki):
    device_id = unique()
    cert, key = pki["intermediate"].issue(device_id)
    registry.create_device_with_x509(device_id, thumb(cert), None, "enabled")
    with connect(hub, tls, pki, cert, key) as device:
        device.send_event(b"x" * 256 * 1024)  # the limit itself is allowed
        with pytest.raises(HttpError) as too_large:
            device.send_event(b"x" * (256 * 1024 + 1))
    assert too_large.value.status == 413 and error_code(too_large.value.body) == "MessageTooLarge"
    assert stats(hub, tls, device_id)["messageCount"] == 1


def test_device_to_cloud_sends_are_throttled_at_the_s1_figure(tls, pki, tmp_path):
    port = free_port()
    config = HubConfig(name="iothub-d2c-local", host_name=f"localhost:{port}", state_dir=tmp_path, port=port,
                       policies={"iothubowner": OWNER_KEY}, rate_limits=RateLimits(multiplier=0.05))  # 5 per s
    app = create_app(config)
    server = serve_in_thread(app, port, tls, client_ca=[pki["root_file"]])
    try:
        device_id = unique()
        app.state.hub.service.put_device(device_id, {"authentication": {"type": "certificateAuthority"}}, None)
        cert, key = pki["intermediate"].issue(device_id)
        with connect(app.state.hub, tls, pki, cert, key) as device:
            statuses = [device._client.request("POST", f"/devices/{device_id}/messages/events", params=D2C,
                                               content=b"m").status for _ in range(8)]
    finally:
        server.stop()
    assert statuses[:5] == [204] * 5 and 429 in statuses[5:]


# -- activity ----------------------------------------------------------------------------------------------
def test_successful_device_calls_move_last_activity_time_and_it_survives_a_restart(hub, registry, tls, pki):
    device_id = unique()
    cert, key = pki["intermediate"].issue(device_id)
    registry.create_device_with_x509(device_id, thumb(cert), None, "enabled")
    assert hub.store.devices.get(device_id)["device"]["lastActivityTime"] == NEVER
    with connect(hub, tls, pki, cert, key) as device:
        device.twin()
        first = hub.store.devices.get(device_id)["device"]["lastActivityTime"]
        assert first > NEVER
        time.sleep(0.01)
        device.send_event(b"ping")
    second = registry.get_device(device_id).last_activity_time
    assert hub.store.devices.get(device_id)["device"]["lastActivityTime"] > first
    assert registry.get_twin(device_id).last_activity_time == second  # the twin view shows the same time
    # Volatile: in the journal only after a flush (the hub flushes when it stops) or the record's next write.
    hub.store.devices.flush()
    reopened = HubStore(hub.config.state_dir)
    assert reopened.devices.get(device_id)["device"]["lastActivityTime"] == \
        hub.store.devices.get(device_id)["device"]["lastActivityTime"]
    reopened.devices.close()


# -- the server side: ASGI TLS extension and a root that appears late -----------------------------------------
def echo_tls_app() -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        tls = (request.scope.get("extensions") or {}).get("tls") or {}
        return JSONResponse({"chain": tls.get("client_cert_chain"), "name": tls.get("client_cert_name"),
                             "version": tls.get("tls_version")})

    return Starlette(routes=[Route("/", echo)])


def test_presented_certificate_reaches_the_app_through_the_asgi_tls_extension(tls, pki):
    port = free_port()
    server = serve_in_thread(echo_tls_app(), port, tls, client_ca=[pki["root_file"]])
    try:
        cert, key = pki["intermediate"].issue("sensor-echo")
        with DeviceConnection(f"localhost:{port}", cert, key, [pki["intermediate"].certificate],
                              tls.ca_cert) as device:
            seen = device._client.request("GET", "/").json()
        with plain_client(type("H", (), {"config": type("C", (), {"host_name": f"localhost:{port}"})})(), tls) as c:
            anonymous = c.get("/").json()
    finally:
        server.stop()
    assert seen["name"] == "CN=sensor-echo" and seen["version"] in (0x0303, 0x0304)
    assert x509.load_pem_x509_certificate(seen["chain"][0].encode()) == cert
    assert anonymous["chain"] == [] and anonymous["name"] is None


def test_a_device_root_that_appears_after_start_is_trusted_without_a_restart(tls, pki, tmp_path):
    root_file = tmp_path / "pki" / "root-ca.pem"  # the seed has not made it yet
    port = free_port()
    server = serve_in_thread(echo_tls_app(), port, tls, client_ca=[root_file])
    try:
        cert, key = pki["intermediate"].issue("sensor-late")
        chain = [pki["intermediate"].certificate]
        with DeviceConnection(f"localhost:{port}", cert, key, chain, tls.ca_cert) as device:
            with pytest.raises(DeviceUnauthorized):
                device._call("GET", "/")
        root_file.parent.mkdir()
        write_pem(root_file, pki["root"].certificate)
        deadline = time.monotonic() + 5
        while True:
            with DeviceConnection(f"localhost:{port}", cert, key, chain, tls.ca_cert) as device:
                try:
                    assert device._call("GET", "/").json()["name"] == "CN=sensor-late"
                    break
                except DeviceUnauthorized:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
    finally:
        server.stop()
