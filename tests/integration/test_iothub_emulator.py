"""The IoT Hub emulator driven by the production SDK (azure-iot-hub) and by raw HTTP for bad input."""

from __future__ import annotations

import base64
import gc
import secrets
import ssl
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import Configuration, ConfigurationContent, QuerySpecification, Twin, TwinProperties
from msrest.exceptions import HttpOperationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from local.identity import issue_token
from local.iothub import HubConfig, RateLimits, TwinLimits, connection_string, create_app
from local.iothub.auth import make_sas
from local.iothub.store import Collection
from local.serve import free_port, serve_in_thread

pytestmark = pytest.mark.integration

OWNER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
SERVICE_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
IDENTITY_KEY = secrets.token_bytes(32)
API = {"api-version": "2021-04-12"}


def hub_config(state_dir: Path, port: int, **overrides) -> HubConfig:
    values = {
        "name": "iothub-test-local",
        "host_name": f"localhost:{port}",
        "state_dir": state_dir,
        "port": port,
        "policies": {"iothubowner": OWNER_KEY, "service": SERVICE_KEY},
        "identity_signing_key": IDENTITY_KEY,
        "rate_limits": RateLimits(enabled=False),
        "twin_limits": TwinLimits(desired_bytes=8 * 1024),
    }
    values.update(overrides)
    return HubConfig(**values)


def https_client(host_name: str, tls, **kwargs) -> httpx.Client:
    context = ssl.create_default_context(cafile=tls.ca_bundle)
    return httpx.Client(base_url=f"https://{host_name}", verify=context, timeout=10, **kwargs)


def stop(server, *registries) -> None:
    """Close the SDK clients' keep-alive TLS connections first: uvicorn waits for them when stopping.
    msrest opens a requests session per call and leaves it to the garbage collector."""
    for registry in registries:
        registry.protocol.close()
    gc.collect()
    server.stop()


def where(condition: str, select: str = "*") -> str:
    """Query text with a WHERE clause (IoT Hub query language, not SQL)."""
    return " ".join(("SELECT", select, "FROM devices WHERE", condition))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def hub(tls, tmp_path_factory):
    port = free_port()
    config = hub_config(tmp_path_factory.mktemp("hub"), port)
    server = serve_in_thread(create_app(config), port, tls)
    yield config
    server.stop()


@pytest.fixture(scope="module")
def registry(hub) -> IoTHubRegistryManager:
    manager = IoTHubRegistryManager.from_connection_string(connection_string(hub))
    yield manager
    manager.protocol.close()


@pytest.fixture
def http(hub, tls):
    with https_client(hub.host_name, tls) as client:
        client.headers["Authorization"] = make_sas(hub.host_name, OWNER_KEY, "iothubowner")
        yield client


def error_code(response: httpx.Response) -> str:
    return response.json()["Message"].split(";")[0].removeprefix("ErrorCode:")


# -- registry and twins through the SDK -------------------------------------------------------------------
def test_sdk_creates_ca_and_edge_devices_and_refuses_a_duplicate(registry):
    sensor, gateway = unique("sensor-temp-FAC01"), unique("gw-FAC01")
    registry.create_device_with_certificate_authority(sensor, "enabled")
    registry.create_device_with_sas(gateway, None, None, "enabled", iot_edge=True)

    device = registry.get_device(sensor)
    assert device.authentication.type == "certificateAuthority"
    assert device.authentication.symmetric_key.primary_key is None
    assert device.capabilities.iot_edge is False
    edge = registry.get_device(gateway)
    assert edge.capabilities.iot_edge is True
    assert edge.device_scope.startswith(f"ms-azure-iot-edge://{gateway}-")
    assert base64.b64decode(edge.authentication.symmetric_key.primary_key)  # keys generated when absent

    with pytest.raises(HttpOperationError) as conflict:
        registry.create_device_with_certificate_authority(sensor, "enabled")
    assert conflict.value.response.status_code == 409


def test_sdk_updates_a_device_with_its_etag_and_refuses_a_stale_one(registry):
    device_id = unique("sensor-press-FAC02")
    created = registry.create_device_with_certificate_authority(device_id, "enabled")
    updated = registry.update_device_with_certificate_authority(device_id, created.etag, "disabled")
    assert updated.status == "disabled" and updated.etag != created.etag
    with pytest.raises(HttpOperationError) as stale:
        registry.update_device_with_certificate_authority(device_id, created.etag, "enabled")
    assert stale.value.response.status_code == 412
    assert registry.get_device(device_id).status == "disabled"


def test_twin_patch_with_current_etag_applies_and_stale_etag_gets_412(registry):
    device_id = unique("sensor-vib-FAC03")
    registry.create_device_with_certificate_authority(device_id, "enabled")
    before = registry.get_twin(device_id)
    patch = Twin(tags={"facility": "FAC03"}, properties=TwinProperties(desired={"telemetry": {"interval": 30}}))

    after = registry.update_twin(device_id, patch, before.etag)
    assert after.etag != before.etag
    assert after.tags == {"facility": "FAC03"}
    assert after.properties.desired["telemetry"] == {"interval": 30}
    assert after.properties.desired["$version"] == before.properties.desired["$version"] + 1
    assert after.properties.desired["$metadata"]["telemetry"]["interval"]["$lastUpdated"].endswith("Z")

    with pytest.raises(HttpOperationError) as stale:
        registry.update_twin(device_id, Twin(tags={"facility": "FAC99"}), before.etag)
    assert stale.value.response.status_code == 412
    assert registry.get_twin(device_id).tags == {"facility": "FAC03"}


def test_twin_patch_null_deletes_and_replace_drops_what_is_not_resent(registry):
    device_id = unique("sensor-flow-FAC04")
    registry.create_device_with_certificate_authority(device_id, "enabled")
    registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"a": 1, "b": {"c": 2, "d": 3}})))
    merged = registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"b": {"c": None}, "e": 5})))
    assert {k: v for k, v in merged.properties.desired.items() if not k.startswith("$")} == {
        "a": 1,
        "b": {"d": 3},
        "e": 5,
    }

    replaced = registry.replace_twin(device_id, Twin(tags={"t": 1}, properties=TwinProperties(desired={"z": 1})))
    assert {k: v for k, v in replaced.properties.desired.items() if not k.startswith("$")} == {"z": 1}
    assert replaced.tags == {"t": 1}


def test_query_pages_through_matching_twins_with_continuation_tokens(registry):
    batch = unique("batch")
    created = sorted(unique("sensor-temp-FAC05") for _ in range(7))
    for device_id in created:
        registry.create_device_with_certificate_authority(device_id, "enabled")
        registry.update_twin(device_id, Twin(tags={"batch": batch}))
    registry.create_device_with_certificate_authority(unique("other"), "enabled")  # must not match

    spec = QuerySpecification(query=where(f"tags.batch = '{batch}'"))
    pages, token = [], None
    while True:
        result = registry.query_iot_hub(spec, token, 3)
        pages.append([twin.device_id for twin in result.items])
        assert result.type == "twin"
        token = result.continuation_token
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [d for p in pages for d in p] == created


def device_client(registry, hub, tls, device_id: str) -> httpx.Client:
    """Create a SAS device and return a client with its own device token: only the device may use the
    device-side routes (certificate devices: tests/integration/test_iothub_device_auth.py)."""
    keys = registry.create_device_with_sas(device_id, None, None, "enabled").authentication.symmetric_key
    token = make_sas(f"{hub.host_name}/devices/{device_id}", keys.primary_key)
    return https_client(hub.host_name, tls, headers={"Authorization": token})


def test_query_selects_expiring_certificates_from_reported_properties(registry, http, hub, tls):
    batch = unique("expiry")
    expiring, fresh = unique("sensor-temp-FAC06"), unique("sensor-temp-FAC06")
    for device_id, not_after in ((expiring, "2027-01-15T00:00:00Z"), (fresh, "2028-06-01T00:00:00Z")):
        with device_client(registry, hub, tls, device_id) as device:
            registry.update_twin(device_id, Twin(tags={"batch": batch}))
            reported = {"certificate": {"notAfter": not_after, "serialNumber": "01AB"}}
            answer = device.patch(f"/devices/{device_id}/twin/properties/reported", params=API, json=reported)
        assert answer.status_code == 200, answer.text

    query = where(f"tags.batch = '{batch}' AND properties.reported.certificate.notAfter < '2027-02-01T00:00:00Z'")
    result = registry.query_iot_hub(QuerySpecification(query=query))
    assert [t.device_id for t in result.items] == [expiring]
    assert result.items[0].properties.reported["certificate"]["notAfter"] == "2027-01-15T00:00:00Z"

    projected = http.post(
        "/devices/query",
        params=API,
        json={"query": where(f"tags.batch = '{batch}'", select="deviceId, properties.reported.certificate")},
    )
    assert projected.headers["x-ms-item-type"] == "raw"
    assert sorted(projected.json(), key=lambda i: i["deviceId"]) == sorted(
        [
            {"deviceId": expiring, "certificate": {"notAfter": "2027-01-15T00:00:00Z", "serialNumber": "01AB"}},
            {"deviceId": fresh, "certificate": {"notAfter": "2028-06-01T00:00:00Z", "serialNumber": "01AB"}},
        ],
        key=lambda i: i["deviceId"],
    )


def test_statistics_count_enabled_and_disabled_devices(registry):
    before = registry.get_device_registry_statistics()
    registry.create_device_with_certificate_authority(unique("stat-on"), "enabled")
    registry.create_device_with_certificate_authority(unique("stat-off"), "disabled")
    after = registry.get_device_registry_statistics()
    assert after.total_device_count == before.total_device_count + 2
    assert after.enabled_device_count == before.enabled_device_count + 1
    assert after.disabled_device_count == before.disabled_device_count + 1
    assert registry.get_service_statistics().connected_device_count == 0


def test_delete_device_then_it_is_gone(registry):
    device_id = unique("sensor-gone")
    registry.create_device_with_certificate_authority(device_id, "enabled")
    registry.delete_device(device_id)
    with pytest.raises(HttpOperationError) as missing:
        registry.get_device(device_id)
    assert missing.value.response.status_code == 404


class LocalIdentityCredential:
    """A TokenCredential whose tokens come from the local managed-identity signing key."""

    def __init__(self, key: bytes):
        self.key = key

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        token, expires = issue_token(self.key, scopes[0])
        return AccessToken(token, expires)


def test_token_credential_mode_works_and_a_foreign_key_is_refused(hub):
    registry = IoTHubRegistryManager.from_token_credential(hub.host_name, LocalIdentityCredential(IDENTITY_KEY))
    device_id = unique("sensor-token")
    registry.create_device_with_certificate_authority(device_id, "enabled")
    assert registry.get_twin(device_id).device_id == device_id

    intruder = IoTHubRegistryManager.from_token_credential(hub.host_name, LocalIdentityCredential(b"x" * 32))
    with pytest.raises(HttpOperationError) as refused:
        intruder.get_device(device_id)
    assert refused.value.response.status_code == 401


def test_apply_configuration_content_sets_edge_agent_module_twin(registry, hub):
    gateway, sensor = unique("gw-FAC07"), unique("sensor-temp-FAC07")
    registry.create_device_with_certificate_authority(gateway, "enabled", iot_edge=True)
    registry.create_device_with_certificate_authority(sensor, "enabled")
    agent = {"schemaVersion": "1.1", "runtime": {"type": "docker"}, "modules": {"tempSensor": {"version": "1.0"}}}
    content = ConfigurationContent(
        modules_content={
            "$edgeAgent": {"properties.desired": agent},
            "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
        }
    )
    configurations = IoTHubConfigurationManager.from_connection_string(connection_string(hub))
    configurations.apply_configuration_on_edge_device(gateway, content)

    twin = registry.get_module_twin(gateway, "$edgeAgent")
    assert {k: v for k, v in twin.properties.desired.items() if not k.startswith("$")} == agent
    with pytest.raises(HttpOperationError) as not_edge:
        configurations.apply_configuration_on_edge_device(sensor, content)
    assert not_edge.value.response.status_code == 400


def test_configurations_crud_with_etag(hub):
    manager = IoTHubConfigurationManager.from_connection_string(connection_string(hub))
    config_id = unique("firmware")
    created = manager.create_configuration(
        Configuration(
            id=config_id,
            target_condition="tags.type='temp'",
            priority=5,
            content=ConfigurationContent(device_content={"properties.desired.firmware": {"version": "2.1"}}),
        )
    )
    assert created.etag and manager.get_configuration(config_id).priority == 5
    created.priority = 7
    assert manager.update_configuration(created, created.etag).priority == 7
    manager.delete_configuration(config_id)
    with pytest.raises(HttpOperationError) as gone:
        manager.get_configuration(config_id)
    assert gone.value.response.status_code == 404


# -- the emulator-only device side ------------------------------------------------------------------------
def test_device_reports_with_its_own_sas_and_cannot_write_another_device(registry, hub, tls):
    device_id, other = unique("sensor-sas"), unique("sensor-sas")
    keys = registry.create_device_with_sas(device_id, None, None, "enabled").authentication.symmetric_key
    registry.create_device_with_sas(other, None, None, "enabled")
    token = make_sas(f"{hub.host_name}/devices/{device_id}", keys.primary_key)
    with https_client(hub.host_name, tls, headers={"Authorization": token}) as device:
        mine = device.patch(f"/devices/{device_id}/twin/properties/reported", params=API, json={"fw": "1.2"})
        theirs = device.patch(f"/devices/{other}/twin/properties/reported", params=API, json={"fw": "6.6"})
        service_api = device.get(f"/twins/{device_id}", params=API)
    assert mine.status_code == 200 and mine.json()["reported"]["fw"] == "1.2"
    assert theirs.status_code == 401 and service_api.status_code == 401
    assert registry.get_twin(device_id).properties.reported["fw"] == "1.2"


def test_device_long_poll_returns_when_desired_properties_change(registry, hub, tls):
    device_id = unique("sensor-wait")
    with device_client(registry, hub, tls, device_id) as device:
        version = device.get(f"/devices/{device_id}/twin", params=API).json()["desired"]["$version"]
        timer = threading.Timer(
            0.5, registry.update_twin, (device_id, Twin(properties=TwinProperties(desired={"interval": 10})))
        )
        timer.start()
        started = time.monotonic()
        answer = device.get(
            f"/devices/{device_id}/twin", params={**API, "desiredVersionAbove": version, "timeoutSeconds": 10}
        )
        timer.join()
    assert answer.json()["desired"]["interval"] == 10
    assert 0.3 < time.monotonic() - started < 5


# -- bad input answers as IoT Hub does --------------------------------------------------------------------
def test_malformed_json_is_400_format_error(http):
    answer = http.put(
        f"/devices/{unique('bad')}", params=API, content=b'{"deviceId": ', headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400 and error_code(answer) == "IotHubFormatError"
    assert answer.headers["iothub-errorcode"] == "IotHubFormatError"


def test_unknown_device_is_404_device_not_found(http):
    for path in ("/devices/nobody-here", "/twins/nobody-here"):
        answer = http.get(path, params=API)
        assert answer.status_code == 404 and error_code(answer) == "DeviceNotFound"
        assert answer.json()["ExceptionMessage"].startswith("Tracking ID:")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "SharedAccessSignature sr=x&sig=y",
        "Bearer not-a-jwt",
    ],
)
def test_missing_or_malformed_credentials_are_401(http, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    if authorization is None:
        del http.headers["Authorization"]
    answer = http.get("/statistics/devices", params=API, headers=headers)
    assert answer.status_code == 401 and error_code(answer) == "IotHubUnauthorizedAccess"


def test_sas_with_wrong_key_or_expired_or_other_host_is_401(http, hub):
    wrong_key = make_sas(hub.host_name, SERVICE_KEY, "iothubowner")
    expired = make_sas(hub.host_name, OWNER_KEY, "iothubowner", ttl_s=-10)
    other_host = make_sas("other-hub.azure-devices.net", OWNER_KEY, "iothubowner")
    for token in (wrong_key, expired, other_host):
        answer = http.get("/statistics/devices", params=API, headers={"Authorization": token})
        assert answer.status_code == 401, token


def test_service_policy_cannot_write_the_registry(hub, tls):
    service = IoTHubRegistryManager.from_connection_string(connection_string(hub, "service"))
    with pytest.raises(HttpOperationError) as refused:
        service.create_device_with_certificate_authority(unique("sensor-denied"), "enabled")
    assert refused.value.response.status_code == 401


def test_query_syntax_error_is_400_and_names_the_position(http):
    answer = http.post("/devices/query", params=API, json={"query": "SELECT * FROM devices WHERE tags.x = = 1"})
    assert answer.status_code == 400
    assert "Line 1:" in answer.json()["Message"]


def test_oversized_desired_properties_are_refused_and_the_twin_is_unchanged(registry, http):
    device_id = unique("sensor-big")
    registry.create_device_with_certificate_authority(device_id, "enabled")
    big = {f"k{i}": "x" * 1000 for i in range(9)}  # ~9 KB against the configured 8 KB
    answer = http.patch(f"/twins/{device_id}", params=API, json={"properties": {"desired": big}})
    assert answer.status_code == 403 and error_code(answer) == "DeviceModelMaxPropertiesExceeded"
    assert "k0" not in registry.get_twin(device_id).properties.desired


@pytest.mark.parametrize(
    "desired",
    [
        {"bad.key": 1},
        {"bad key": 1},
        {"$bad": 1},
        {"long": "x" * 5000},
        None,  # nested(11), below
    ],
)
def test_invalid_twin_properties_are_400(registry, http, desired):
    desired = desired or nested(11)
    device_id = unique("sensor-invalid")
    registry.create_device_with_certificate_authority(device_id, "enabled")
    answer = http.patch(f"/twins/{device_id}", params=API, json={"properties": {"desired": desired}})
    assert answer.status_code == 400 and error_code(answer) == "ArgumentInvalid", answer.text


def nested(levels: int) -> dict:
    """{"l1": {"l2": ... {"l<levels>": {"leaf": 1}}}}: `levels` objects below the section itself."""
    value: dict = {"leaf": 1}
    for level in range(levels, 0, -1):
        value = {f"l{level}": value}
    return value


def test_ten_levels_of_nesting_are_accepted(registry, http):
    device_id = unique("sensor-deep")
    registry.create_device_with_certificate_authority(device_id, "enabled")
    answer = http.patch(f"/twins/{device_id}", params=API, json={"properties": {"desired": nested(10)}})
    assert answer.status_code == 200, answer.text


def test_missing_api_version_is_400(http):
    answer = http.get("/statistics/devices")
    assert answer.status_code == 400 and error_code(answer) == "InvalidProtocolVersion"


def test_huge_or_absurd_bodies_are_4xx_not_500(http):
    too_big = http.put(f"/devices/{unique('big')}", params=API, content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    deep = http.patch("/twins/whatever", params=API, content=b"[" * 100_000 + b"]" * 100_000)
    not_object = http.put(f"/devices/{unique('arr')}", params=API, json=[1, 2])
    bad_id = http.put("/devices/" + "x" * 200, params=API, json={})
    bad_token = http.post(
        "/devices/query", params=API, json={"query": "SELECT * FROM devices"}, headers={"x-ms-continuation": "garbage"}
    )
    assert too_big.status_code == 413
    assert [r.status_code for r in (deep, not_object, bad_id, bad_token)] == [400, 400, 400, 400]


# -- throttling, events, durability -----------------------------------------------------------------------
def test_query_throttle_answers_429_with_retry_after(tls, tmp_path):
    port = free_port()
    config = hub_config(tmp_path, port, rate_limits=RateLimits(enabled=True))
    server = serve_in_thread(create_app(config), port, tls)
    try:
        with https_client(config.host_name, tls) as client:
            client.headers["Authorization"] = make_sas(config.host_name, OWNER_KEY, "iothubowner")
            answers = [
                client.post("/devices/query", params=API, json={"query": "SELECT * FROM devices"}) for _ in range(21)
            ]
    finally:
        server.stop()
    assert [a.status_code for a in answers[:20]] == [200] * 20
    assert answers[20].status_code == 429
    assert int(answers[20].headers["Retry-After"]) >= 1
    assert error_code(answers[20]) == "ThrottlingException"


class EventSink:
    """A tiny Event Grid subscriber that records what it receives."""

    def __init__(self):
        self.received: list[tuple[dict, list]] = []
        self.port = free_port()

        async def receive(request: Request) -> JSONResponse:
            self.received.append((dict(request.headers), await request.json()))
            return JSONResponse({})

        self.app = Starlette(routes=[Route("/api/events", receive, methods=["POST"])])
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/events"

    def start(self):
        self.server = serve_in_thread(self.app, self.port)
        return self

    def stop(self):
        if self.server:
            self.server.stop()

    def wait_for(self, count: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return [event for _, batch in self.received for event in batch]


def test_device_created_and_deleted_reach_the_event_grid_subscriber(tls, tmp_path):
    sink = EventSink().start()
    port = free_port()
    config = hub_config(tmp_path, port, event_grid_url=sink.url, event_backoff_s=(0.1, 0.5))
    server = serve_in_thread(create_app(config), port, tls)
    registry = IoTHubRegistryManager.from_connection_string(connection_string(config))
    try:
        device_id = unique("sensor-temp-FAC08")
        registry.create_device_with_certificate_authority(device_id, "enabled")
        registry.delete_device(device_id)
        events = sink.wait_for(2)
    finally:
        stop(server, registry)
        sink.stop()
    created, deleted = events
    assert sink.received[0][0]["aeg-event-type"] == "Notification"
    assert created["eventType"] == "Microsoft.Devices.DeviceCreated"
    assert deleted["eventType"] == "Microsoft.Devices.DeviceDeleted"
    assert uuid.UUID(created["id"]) and created["id"] != deleted["id"]
    assert (
        created["topic"]
        == (
            f"/SUBSCRIPTIONS/{config.subscription_id}/RESOURCEGROUPS/{config.resource_group}"
            "/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/IOTHUB-TEST-LOCAL"
        ).upper()
    )
    assert created["subject"] == f"devices/{device_id}"
    assert created["eventTime"].endswith("Z") and created["metadataVersion"] == "1"
    assert created["dataVersion"] == "1"
    data = created["data"]
    assert data["hubName"] == "iothub-test-local" and data["deviceId"] == device_id
    twin = data["twin"]
    assert twin["deviceId"] == device_id and twin["authenticationType"] == "certificateAuthority"
    assert twin["status"] == "enabled" and twin["etag"] and twin["version"] >= 1
    assert twin["properties"]["desired"]["$version"] == 1
    assert "$lastUpdated" in twin["properties"]["reported"]["$metadata"]
    assert "capabilities" not in twin  # as documented: the event does not tell an IoT Edge device apart


def test_events_wait_for_a_subscriber_that_is_not_up_yet_even_across_a_restart(tls, tmp_path):
    sink = EventSink()  # its port is chosen but nothing listens yet
    port = free_port()
    config = hub_config(tmp_path, port, event_grid_url=sink.url, event_backoff_s=(0.1, 0.3))
    server = serve_in_thread(create_app(config), port, tls)
    registry = IoTHubRegistryManager.from_connection_string(connection_string(config))
    device_id = unique("sensor-early")
    try:
        registry.create_device_with_certificate_authority(device_id, "enabled")
        time.sleep(0.5)  # several failed attempts
    finally:
        stop(server, registry)
    assert len(Collection(tmp_path / "outbox")) == 1  # the event survived the stop

    sink.start()
    server = serve_in_thread(create_app(config), port, tls)  # a restart on the same state
    registry = IoTHubRegistryManager.from_connection_string(connection_string(config))
    try:
        events = sink.wait_for(1)
        assert registry.get_device(device_id).device_id == device_id  # the registry survived too
    finally:
        stop(server, registry)
        sink.stop()
    assert [e["data"]["deviceId"] for e in events] == [device_id]
    assert len(Collection(tmp_path / "outbox")) == 0  # delivered, so gone from the durable outbox


def test_twin_state_survives_a_restart(tls, tmp_path):
    port = free_port()
    config = hub_config(tmp_path, port)
    device_id = unique("sensor-durable")
    server = serve_in_thread(create_app(config), port, tls)
    registry = IoTHubRegistryManager.from_connection_string(connection_string(config))
    try:
        registry.create_device_with_certificate_authority(device_id, "enabled")
        etag = registry.update_twin(device_id, Twin(tags={"facility": "FAC09"})).etag
    finally:
        stop(server, registry)
    server = serve_in_thread(create_app(config), port, tls)
    registry = IoTHubRegistryManager.from_connection_string(connection_string(config))
    try:
        twin = registry.get_twin(device_id)
    finally:
        stop(server, registry)
    assert twin.tags == {"facility": "FAC09"} and twin.etag == etag


def test_bulk_create_sets_the_initial_twin_in_the_same_step_as_dps_does(tls, tmp_path):
    from azure.iot.hub.models import AuthenticationMechanism, DeviceCapabilities, ExportImportDevice, PropertyContainer

    sink = EventSink().start()
    port = free_port()
    config = hub_config(tmp_path, port, event_grid_url=sink.url, event_backoff_s=(0.1, 0.5))
    server = serve_in_thread(create_app(config), port, tls)
    registry = IoTHubRegistryManager.from_connection_string(connection_string(config))
    try:
        device_id = unique("sensor-vib-FAC07")
        entry = ExportImportDevice(
            id=device_id, import_mode="create", status="enabled",
            authentication=AuthenticationMechanism(type="certificateAuthority"),
            capabilities=DeviceCapabilities(iot_edge=False),
            tags={"facility": "FAC07", "sensorType": "vibration"},
            properties=PropertyContainer(desired={"onboarding": {"state": "awaitingConfiguration"}}))
        result = registry.bulk_create_or_update_devices([entry])
        assert result.is_successful is True
        twin = registry.get_twin(device_id)
        assert twin.tags == {"facility": "FAC07", "sensorType": "vibration"}
        assert twin.properties.desired["onboarding"] == {"state": "awaitingConfiguration"}
        created = sink.wait_for(1)[0]
        assert created["data"]["twin"]["tags"]["facility"] == "FAC07"  # the event already carries the tags
        again = registry.bulk_create_or_update_devices([entry])
        assert again.is_successful is False and again.errors[0].error_code == "DeviceAlreadyExists"
    finally:
        stop(server, registry)
        sink.stop()
