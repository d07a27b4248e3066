"""Twin setup end to end on the local stack, every piece in-process on free ports:

IoT Hub emulator (creates the device, emits DeviceCreated) -> dev host Event Grid endpoint -> on_device_created
-> templates from Azurite, overrides from SQLite (ODBC) -> twin PATCH / edge deployment / Blob on the emulator.

Two hubs: `loud` delivers its lifecycle events to the dev host as IoT Hub + Event Grid would; `quiet` delivers
none, so a test can post its events itself (several times, out of order, after a delete). The hubs' desired
properties limit is 8 KB (the reference user's lesson) and twin setup's budget 2 KB, so a large facility
override is enough to push a configuration to Blob.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.storage.blob import BlobServiceClient

import function_app
from local.host import create_host_app
from local.iothub import HubConfig, RateLimits, TwinLimits, connection_string, create_app
from local.iothub.config import DEVICE_CREATED
from local.iothub.events import lifecycle_event
from local.seed.data import OVERRIDES
from local.seed.seed import seed_sql
from local.serve import free_port, serve_in_thread
from shared.bootstrap import Services
from shared.config import Settings
from shared.sql import Database
from twin_setup import wiring as twin_wiring
from twin_setup.preview import preview, render
from twin_setup.wiring import build_twin_setup

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "infra" / "templates"
SECTIONS = ("telemetry", "alerts", "firmware", "diagnostics")


# -- an independent reference merge (RFC 7386), so the test does not check the product with itself --------
def reference_merge(target, patch):
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = reference_merge(out.get(key), value)
    return out


def expected_document(template: str, facility: str, extra: list[tuple[str, str, dict]] = ()) -> dict:
    document = json.loads((TEMPLATES / f"{template}-sensor.json").read_text())
    rows = [*OVERRIDES, *extra]
    for sensor_type in ("*", template):
        for f, t, override in rows:
            if f == facility and t == sensor_type:
                document = reference_merge(document, override)
    return document


def plain(section: dict) -> dict:
    return {k: v for k, v in section.items() if not k.startswith("$")}


# -- the stack -----------------------------------------------------------------------------------------------
class ScriptedLimiter:
    """Stands in for a hub's throttles: answers 429 (Retry-After `wait`) to the next n calls of an operation."""

    def __init__(self):
        self.plan: dict[str, list[int]] = {}
        self.throttled: Counter = Counter()
        self._lock = threading.Lock()

    def throttle_next(self, operation: str, n: int, wait: int = 1) -> None:
        with self._lock:
            self.plan[operation] = [wait] * n

    def check(self, operation: str) -> int | None:
        with self._lock:
            queue = self.plan.get(operation)
            if queue:
                self.throttled[operation] += 1
                return queue.pop(0)
        return None


@dataclass
class HubUnderTest:
    config: HubConfig
    app: object
    server: object
    writes: Counter
    limiter: ScriptedLimiter
    registry: IoTHubRegistryManager

    def created_event(self, device_id: str) -> dict:
        twin = self.app.state.hub.service.get_twin(device_id)
        return lifecycle_event(self.config, DEVICE_CREATED, device_id, twin)


@dataclass
class Stack:
    host_url: str
    loud: HubUnderTest
    quiet: HubUnderTest
    db: Database
    blobs: BlobServiceClient
    templates_container: str
    configurations_container: str
    settings: dict[str, str]
    service: object

    def deliver(self, events: list[dict]) -> httpx.Response:
        return httpx.post(f"{self.host_url}/runtime/webhooks/EventGrid", params={"functionName": "on_device_created"},
                          json=events, headers={"aeg-event-type": "Notification"}, timeout=60)


def start_hub(tls, tmp_path: Path, name: str, event_grid_url: str | None) -> HubUnderTest:
    port = free_port()
    owner = base64.b64encode(secrets.token_bytes(32)).decode()
    config = HubConfig(name=name, host_name=f"localhost:{port}", state_dir=tmp_path / name, port=port,
                       policies={"iothubowner": owner}, rate_limits=RateLimits(enabled=False),
                       twin_limits=TwinLimits(desired_bytes=8 * 1024), event_grid_url=event_grid_url,
                       event_backoff_s=(0.2, 1.0))
    app = create_app(config)
    hub = app.state.hub
    writes: Counter = Counter()
    original = hub.service.update_twin

    def counting(device_id, body, if_match, replace):
        result = original(device_id, body, if_match, replace)
        writes[device_id] += 1
        return result

    hub.service.update_twin = counting
    limiter = ScriptedLimiter()
    hub.limiter = limiter
    server = serve_in_thread(app, port, tls)
    registry = IoTHubRegistryManager.from_connection_string(connection_string(config))
    return HubUnderTest(config, app, server, writes, limiter, registry)


@pytest.fixture(scope="module")
def stack(tls, azurite, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("twin-setup")
    db_path = tmp / "onboarding.db"
    db = Database(f"Driver=SQLite3;Database={db_path}")
    seed_sql(db)
    blobs = BlobServiceClient.from_connection_string(azurite)
    suffix = uuid.uuid4().hex[:8]
    templates_container, configurations_container = f"twin-templates-{suffix}", f"twin-configs-{suffix}"
    blobs.create_container(templates_container)
    blobs.create_container(configurations_container)
    for path in TEMPLATES.glob("*-sensor.json"):
        blobs.get_container_client(templates_container).upload_blob(path.name, path.read_bytes())

    host_app = create_host_app(function_app.app, {"version": "2.0", "functionTimeout": "00:01:00"}, None)
    host = serve_in_thread(host_app, free_port())
    host_url = f"http://127.0.0.1:{host.port}"
    event_url = f"{host_url}/runtime/webhooks/EventGrid?functionName=on_device_created"
    loud = start_hub(tls, tmp, "iothub-loud-local", event_url)
    quiet = start_hub(tls, tmp, "iothub-quiet-local", None)
    settings = {
        "SQL_CONNECTION_STRING": f"Driver=SQLite3;Database={db_path}",
        "STORAGE_CONNECTION_STRING": azurite,
        "IOT_HUB_CONNECTION_STRINGS": f"{connection_string(loud.config)},{connection_string(quiet.config)}",
        "IOT_HUB_NAMES": f"{loud.config.name}={loud.config.host_name},{quiet.config.name}={quiet.config.host_name}",
        "TEMPLATES_CONTAINER": templates_container,
        "DEVICE_CONFIGURATIONS_CONTAINER": configurations_container,
        "TWIN_DESIRED_LIMIT_BYTES": "8192",
        "TWIN_DESIRED_BUDGET_BYTES": "2048",
        "TWIN_RETRY_BASE_SECONDS": "0.05",
        "USE_MANAGED_IDENTITY": "false",
    }
    svc = Services(Settings(settings))
    service = build_twin_setup(svc)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(twin_wiring, "twin_setup", lambda: service)
        yield Stack(host_url, loud, quiet, db, blobs, templates_container, configurations_container, settings,
                    service)
    host.stop()
    for hub in (loud, quiet):
        hub.registry.protocol.close()
    service.hub.close()
    gc.collect()
    for hub in (loud, quiet):
        hub.server.stop()


def wait_for_onboarding(hub: HubUnderTest, device_id: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        twin = hub.app.state.hub.service.get_twin(device_id)
        status = (twin.get("tags") or {}).get("onboarding", {}).get("status")
        if status in ("configured", "failed"):
            return twin
        time.sleep(0.05)
    raise AssertionError(f"{device_id} was not configured within {timeout} s")


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


# -- the Done-when list ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, template, facility", [
    ("temp", "temperature", "FAC03"), ("press", "pressure", "FAC11"), ("vib", "vibration", "FAC07"),
    ("flow", "flow", "FAC01"),
])
def test_a_device_created_in_the_hub_gets_template_merged_with_overrides(stack, code, template, facility):
    device_id = unique(f"sensor-{code}-{facility}-SN")
    stack.loud.registry.create_device_with_certificate_authority(device_id, "enabled")
    twin = wait_for_onboarding(stack.loud, device_id)
    expected = expected_document(template, facility)
    desired = plain(twin["properties"]["desired"])
    assert {k: v for k, v in desired.items() if k != "onboarding"} == {k: expected[k] for k in SECTIONS}
    onboarding = twin["tags"]["onboarding"]
    assert (onboarding["status"], onboarding["template"], onboarding["templateVersion"]) == (
        "configured", template, "1.0.0")
    assert desired["onboarding"] == {"state": "configured", "configurationHash": onboarding["configurationHash"],
                                     "templateVersion": "1.0.0"}
    assert stack.loud.writes[device_id] == 1


def test_three_deliveries_out_of_order_with_another_devices_events_write_once_per_device(stack):
    hub = stack.quiet
    a, b = unique("sensor-temp-FAC05-A"), unique("sensor-press-FAC06-B")
    for device_id in (a, b):
        hub.registry.create_device_with_certificate_authority(device_id, "enabled")
    ev_a, ev_b = hub.created_event(a), hub.created_event(b)
    order = [ev_b, ev_a, ev_a, ev_b, ev_a, ev_b]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda e: stack.deliver([e]).status_code, order))
    assert answers == [202] * 6
    assert (hub.writes[a], hub.writes[b]) == (1, 1)
    for device_id in (a, b):
        twin = hub.registry.get_twin(device_id)
        assert twin.tags["onboarding"]["status"] == "configured"
        assert twin.properties.desired["$version"] == 2  # one desired write since creation
    assert stack.deliver([ev_a, ev_b]).status_code == 202  # a late fourth delivery changes nothing
    assert (hub.writes[a], hub.writes[b]) == (1, 1)


def test_a_gateway_gets_its_edge_deployment(stack):
    device_id = unique("sensor-gw-FAC02-GW")
    stack.loud.registry.create_device_with_certificate_authority(device_id, "enabled", iot_edge=True)
    twin = wait_for_onboarding(stack.loud, device_id)
    assert twin["tags"]["onboarding"]["status"] == "configured"
    assert twin["tags"]["onboarding"]["edgeDeploymentHash"]
    manifest = json.loads((TEMPLATES / "gateway-sensor.json").read_text())["edge"]["modulesContent"]
    for module_id in ("$edgeAgent", "$edgeHub"):
        module_twin = stack.loud.registry.get_module_twin(device_id, module_id)
        assert plain(module_twin.properties.desired) == manifest[module_id]["properties.desired"]
    assert "edge" not in twin["properties"]["desired"]


def test_an_oversized_configuration_lands_in_blob_with_the_pointer_in_the_twin(stack):
    big = {"alerts": {f"band{i:02d}": {"warn": float(i), "label": f"zone {i} " + "x" * 30} for i in range(40)}}
    text = json.dumps(big)
    assert 2048 < len(text) < 4000  # over the budget, within the overrides column (NVARCHAR(4000))
    stack.db.execute("INSERT INTO facility_overrides (facility_code, sensor_type, overrides, updated_at) "
                     "VALUES (?, ?, ?, ?)", ["FAC12", "vibration", text, "2026-03-01 10:00:00"])
    stack.service.overrides.invalidate()
    device_id = unique("sensor-vib-FAC12-BIG")
    stack.loud.registry.create_device_with_certificate_authority(device_id, "enabled")
    twin = wait_for_onboarding(stack.loud, device_id)
    onboarding = twin["properties"]["desired"]["onboarding"]
    config_hash = onboarding["configurationHash"]
    assert twin["tags"]["onboarding"]["storage"] == "blob"
    blob = stack.blobs.get_blob_client(stack.configurations_container, f"{device_id}/{config_hash}.json")
    assert onboarding["configurationUrl"] == blob.url
    stored = json.loads(blob.download_blob().readall())
    assert stored == expected_document("vibration", "FAC12", [("FAC12", "vibration", big)])
    assert set(plain(twin["properties"]["desired"])) == {"telemetry", "firmware", "diagnostics", "onboarding"}


def test_a_hub_answering_429_is_retried_and_the_twin_is_still_configured(stack):
    hub = stack.quiet
    device_id = unique("sensor-flow-FAC04-T")
    hub.registry.create_device_with_certificate_authority(device_id, "enabled")
    event = hub.created_event(device_id)
    hub.limiter.throttle_next("twin_read", 1, wait=1)
    hub.limiter.throttle_next("twin_update", 1, wait=1)
    started = time.monotonic()
    assert stack.deliver([event]).status_code == 202
    assert time.monotonic() - started >= 2  # Retry-After: 1, twice
    assert hub.limiter.throttled == Counter({"twin_read": 1, "twin_update": 1})
    assert hub.registry.get_twin(device_id).tags["onboarding"]["status"] == "configured"


def test_a_hub_that_stays_throttled_fails_the_delivery_for_event_grid_to_retry(stack):
    hub = stack.quiet
    device_id = unique("sensor-flow-FAC04-U")
    hub.registry.create_device_with_certificate_authority(device_id, "enabled")
    hub.limiter.throttle_next("twin_read", 1, wait=60)  # longer than the handler may wait
    assert stack.deliver([hub.created_event(device_id)]).status_code == 500
    assert stack.deliver([hub.created_event(device_id)]).status_code == 202  # Event Grid's redelivery
    assert hub.writes[device_id] == 1


def test_an_unknown_template_marks_the_twin_failed_with_its_code(stack):
    container = stack.blobs.get_container_client(stack.templates_container)
    container.delete_blob("flow-sensor.json")
    stack.service.templates.invalidate()
    device_id = unique("sensor-flow-FAC08-X")
    try:
        stack.loud.registry.create_device_with_certificate_authority(device_id, "enabled")
        twin = wait_for_onboarding(stack.loud, device_id)
    finally:
        container.upload_blob("flow-sensor.json", (TEMPLATES / "flow-sensor.json").read_bytes())
        stack.service.templates.invalidate()
    assert (twin["tags"]["onboarding"]["status"], twin["tags"]["onboarding"]["reason"]) == (
        "failed", "unknown_template")
    assert plain(twin["properties"]["desired"])["onboarding"] == {"state": "failed", "reason": "unknown_template"}
    rows = stack.db.fetch_all("SELECT outcome, reason_code, hub, details FROM provisioning_events "
                              "WHERE registration_id = ?", [device_id])
    assert [(r["outcome"], r["reason_code"], r["hub"]) for r in rows] == [
        ("error", "unknown_template", stack.loud.config.host_name)]
    assert json.loads(rows[0]["details"])["stage"] == "twinSetup"


def test_a_device_deleted_before_its_created_event_is_processed_stays_deleted(stack):
    hub = stack.quiet
    device_id = unique("sensor-temp-FAC09-D")
    hub.registry.create_device_with_certificate_authority(device_id, "enabled")
    event = hub.created_event(device_id)
    hub.registry.delete_device(device_id)
    assert stack.deliver([event]).status_code == 202
    assert device_id not in hub.app.state.hub.store.devices
    assert hub.writes[device_id] == 0


# -- reads of templates and overrides against the real Azurite and SQLite ---------------------------------------
def test_300_devices_read_the_template_once_and_the_overrides_once_per_ttl(stack):
    from tests.unit.test_twin_service import FakeHub

    svc = Services(Settings({**stack.settings, "TWIN_TEMPLATE_CACHE_SECONDS": "60",
                             "IOT_HUB_NAMES": "contoso-west=contoso-west.azure-devices.net",
                             "IOT_HUB_CONNECTION_STRINGS": "", "IOT_HUB_HOSTNAMES": "contoso-west.azure-devices.net"}))
    service = build_twin_setup(svc)
    service.hub = FakeHub()
    from twin_setup.events import LifecycleEvent

    devices = [f"sensor-temp-FAC03-R{i:03d}" for i in range(300)]
    for device in devices:
        service.hub.create(device)
    events = [LifecycleEvent(f"e{i}", DEVICE_CREATED, "eventGrid", "contoso-west", d) for i, d in enumerate(devices)]
    with ThreadPoolExecutor(16) as pool:
        assert {o.outcome for o in pool.map(service.handle, events)} == {"configured"}
    assert (service.templates.reads.downloads, service.templates.reads.not_modified, service.overrides.loads) == (
        1, 0, 1)
    # after the TTL a conditional GET against Azurite answers 304 and nothing is downloaded again
    service.templates._cache.invalidate()
    service.hub.create("sensor-temp-FAC03-R999")
    service.handle(LifecycleEvent("e999", DEVICE_CREATED, "eventGrid", "contoso-west", "sensor-temp-FAC03-R999"))
    assert (service.templates.reads.downloads, service.templates.reads.not_modified) == (1, 1)


# -- the preview CLI ---------------------------------------------------------------------------------------
def test_preview_shows_the_document_its_size_and_where_each_value_came_from(stack, capsys):
    result = preview("sensor-temp-FAC03-SN482019", service=stack.service)
    assert result["storage"] == "twin" and result["limitBytes"] == 8192 and result["budgetBytes"] == 2048
    assert result["sources"]["alerts.high"] == "override FAC03/temperature"
    assert result["sources"]["diagnostics.logLevel"] == "override FAC03/*"
    assert result["sources"]["alerts.low"] == "template temperature"
    render(result)
    out = capsys.readouterr().out
    assert "template temperature < override FAC03/* < override FAC03/temperature" in out
    assert "written to the twin" in out


def test_preview_cli_runs_as_a_module(stack, tmp_path):
    env = {**os.environ, **stack.settings, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "twin_setup.preview", "sensor-press-FAC11-SN1", "--json",
                          "--settings", str(tmp_path / "none.json")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["deleted"] == {"alerts.spikeThreshold": "override FAC11/pressure"}
    unknown = subprocess.run([sys.executable, "-m", "twin_setup.preview", "sensor-temp-FAC77-SN1",
                              "--settings", str(tmp_path / "none.json")], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown_facility" in unknown.stdout
