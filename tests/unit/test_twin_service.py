"""The twin setup service with in-memory fakes of IoT Hub, Blob and SQL: the orchestration rules.

The fakes (FakeHub, FakeContainer, FakeDatabase, build_service) are reused by the contract tests.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError, ServiceRequestError

from local.seed.data import override_rows
from shared.audit import AuditWriter
from shared.iothub import DeviceGone, HubRefused, HubResolver, PreconditionFailed, Twin, UnknownHub
from shared.retry import RetryPolicy, TransientError
from twin_setup.events import LifecycleEvent
from twin_setup.merge import merge_patch
from twin_setup.overrides import OverrideStore
from twin_setup.records import ConfigurationStore
from twin_setup.service import TwinSetup
from twin_setup.settings import TwinLimits, TwinSetupSettings
from twin_setup.templates import TemplateStore

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "templates"
HOST = "contoso-west.azure-devices.net"
HUB_NAME = "contoso-west"
FACILITIES = [f"FAC{i:02d}" for i in range(1, 13)]


# -- fakes -------------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class _Props:
    size: int
    etag: str
    metadata: dict = field(default_factory=dict)


class _Download:
    def __init__(self, data: bytes, etag: str):
        self._data, self.properties = data, _Props(len(data), etag)

    def readall(self) -> bytes:
        return self._data


class FakeContainer:
    """Enough of azure.storage.blob.ContainerClient: conditional downloads, uploads, deletes, counting."""

    def __init__(self, blobs: dict[str, bytes] | None = None, url: str = "https://st.blob/device-configurations"):
        self.blobs: dict[str, tuple[bytes, str]] = {}
        self.url = url
        self.downloads = self.not_modified = 0
        self.fail_next = 0
        self._version = 0
        for name, data in (blobs or {}).items():
            self.put(name, data)

    def put(self, name: str, data: bytes) -> None:
        self._version += 1
        self.blobs[name] = (data, f'"0x{self._version:04X}"')

    def get_blob_client(self, name: str):
        container = self

        class Blob:
            def download_blob(self, etag=None, match_condition=None):
                if container.fail_next:
                    container.fail_next -= 1
                    raise ServiceRequestError("connection refused")
                if name not in container.blobs:
                    raise ResourceNotFoundError("BlobNotFound")
                data, current = container.blobs[name]
                if match_condition == MatchConditions.IfModified and etag == current:
                    container.not_modified += 1
                    error = ResourceModifiedError("ConditionNotMet")  # what azure-storage-blob raises for 304
                    error.status_code = 304
                    raise error
                container.downloads += 1
                return _Download(data, current)

        return Blob()

    def upload_blob(self, name, data, overwrite=False, content_settings=None, metadata=None):
        self.put(name, data)

    def delete_blob(self, name):
        self.blobs.pop(name, None)


def seed_templates() -> FakeContainer:
    return FakeContainer({p.name: p.read_bytes() for p in TEMPLATES.glob("*-sensor.json")},
                         url="https://st.blob/sensor-configurations")


class FakeDatabase:
    """facilities LEFT JOIN facility_overrides, as OverrideStore queries it; INSERTs are recorded."""

    def __init__(self, facilities=FACILITIES, overrides=None):
        self.facilities = set(facilities)
        self.overrides = list(override_rows() if overrides is None else overrides)
        self.queries = 0
        self.inserted: list[list[Any]] = []

    def fetch_all(self, sql, params=()):
        self.queries += 1
        (facility,) = params
        if facility not in self.facilities:
            return []
        rows = [{"facility_code": facility, "sensor_type": t, "overrides": o, "updated_at": "2026-01-01"}
                for f, t, o in self.overrides if f == facility]
        return rows or [{"facility_code": facility, "sensor_type": None, "overrides": None, "updated_at": None}]

    def execute(self, sql, params=()):
        self.inserted.append(list(params))
        return 1


@dataclass
class FakeHub:
    """IoT Hub twins with etags and merge-PATCH, counting writes; scripted errors per operation."""

    twins: dict[str, dict] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)
    precondition_failures: int = 0
    edge_applied: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, list[Exception]] = field(default_factory=dict)
    before_write: Any = None  # callable(device_id), run once before the next write (a concurrent writer)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, device_id: str, tags: dict | None = None, edge: bool = False) -> None:
        self.twins[device_id] = {"deviceId": device_id, "etag": "AAAAAAAAAAE=", "version": 2,
                                 "tags": tags or {}, "capabilities": {"iotEdge": edge},
                                 "properties": {"desired": {"$version": 1}, "reported": {"$version": 1}}}

    def _scripted(self, operation: str) -> None:
        queue = self.errors.get(operation)
        if queue:
            raise queue.pop(0)

    @staticmethod
    def _run(budget, call):
        """As the real adapter does: every call within the caller's retry budget."""
        return budget.run(call, "fake hub call") if budget is not None else call()

    def get_twin(self, host, device_id, budget=None):
        return self._run(budget, lambda: self._get_twin(host, device_id))

    def _get_twin(self, host, device_id):
        self._scripted("get")
        with self.lock:
            doc = self.twins.get(device_id)
            return None if doc is None else Twin.from_json(host, copy.deepcopy(doc))

    def update_twin(self, host, device_id, patch, etag, budget=None):
        return self._run(budget, lambda: self._update_twin(device_id, patch, etag))

    def _update_twin(self, device_id, patch, etag):
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook(device_id)
        self._scripted("update")
        with self.lock:
            twin = self.twins.get(device_id)
            if twin is None:
                raise DeviceGone(device_id)
            if etag not in (None, twin["etag"]):
                self.precondition_failures += 1
                raise PreconditionFailed(device_id)
            self._apply(twin, patch)
            self.writes[device_id] = self.writes.get(device_id, 0) + 1
            return copy.deepcopy(twin)

    def _apply(self, twin, patch):
        twin["tags"] = merge_patch(twin["tags"], patch.get("tags") or {})
        desired = (patch.get("properties") or {}).get("desired")
        if desired:
            version = twin["properties"]["desired"].pop("$version")
            twin["properties"]["desired"] = {**merge_patch(twin["properties"]["desired"], desired),
                                             "$version": version + 1}
        twin["version"] += 1
        twin["etag"] = f"etag-{twin['version']}"

    def apply_edge(self, host, device_id, modules_content, budget=None):
        return self._run(budget, lambda: self._apply_edge(device_id, modules_content))

    def _apply_edge(self, device_id, modules_content):
        self._scripted("edge")
        if not self.twins[device_id]["capabilities"]["iotEdge"]:
            raise HubRefused(400, "ArgumentInvalid", "not an edge device")
        self.edge_applied[device_id] = modules_content

    def desired(self, device_id: str) -> dict:
        return {k: v for k, v in self.twins[device_id]["properties"]["desired"].items() if not k.startswith("$")}

    def onboarding(self, device_id: str) -> dict:
        return self.twins[device_id]["tags"].get("onboarding", {})


@dataclass
class Harness:
    service: TwinSetup
    hub: FakeHub
    templates: FakeContainer
    configurations: FakeContainer
    db: FakeDatabase
    clock: FakeClock
    slept: list[float]

    def created(self, device_id: str, event_id: str = "e1") -> LifecycleEvent:
        return LifecycleEvent(event_id, "Microsoft.Devices.DeviceCreated", "eventGrid", HUB_NAME, device_id)

    def deliver(self, device_id: str):
        return self.service.handle(self.created(device_id))


def build_service(limits: TwinLimits | None = None, ttl_s: float = 60, **overrides) -> Harness:
    cfg = TwinSetupSettings(hub_hosts=(HOST,), limits=limits or TwinLimits(), template_ttl_s=ttl_s,
                            overrides_ttl_s=ttl_s, retry=RetryPolicy(attempts=4, base_s=0.01, budget_s=20),
                            **overrides)
    hub, templates, db, clock = FakeHub(), seed_templates(), FakeDatabase(), FakeClock()
    configurations = FakeContainer()
    slept: list[float] = []
    service = TwinSetup(
        settings=cfg, resolver=HubResolver(cfg.hub_hosts, cfg.hub_names), hub=hub,
        templates=TemplateStore(lambda: templates, cfg.limits, ttl_s, cfg.template_max_bytes, clock=clock),
        overrides=OverrideStore(db, ttl_s, clock=clock),
        configurations=ConfigurationStore(lambda: configurations), audit=AuditWriter(db),
        now=lambda: "2026-03-01T10:00:00Z", sleep=slept.append)
    return Harness(service, hub, templates, configurations, db, clock, slept)


def expected_desired(template: str, *patches: dict) -> dict:
    document = json.loads((TEMPLATES / f"{template}-sensor.json").read_text())
    for patch in patches:
        document = merge_patch(document, patch)
    return {k: document[k] for k in ("telemetry", "alerts", "firmware", "diagnostics")}


@pytest.fixture
def h() -> Harness:
    return build_service()


# -- configuring ---------------------------------------------------------------------------------------------
def test_a_new_sensor_gets_template_merged_with_its_facility_overrides(h, caplog):
    caplog.set_level(logging.INFO, logger="onboarding.events")
    h.hub.create("sensor-temp-FAC03-SN1")
    outcome = h.deliver("sensor-temp-FAC03-SN1")
    assert outcome.outcome == "configured" and outcome.storage == "twin"
    desired = h.hub.desired("sensor-temp-FAC03-SN1")
    assert {k: v for k, v in desired.items() if k != "onboarding"} == expected_desired(
        "temperature", {"diagnostics": {"logLevel": "debug"}},
        {"telemetry": {"intervalSeconds": 30}, "alerts": {"high": 70.0}})
    assert desired["onboarding"]["state"] == "configured"
    assert h.hub.onboarding("sensor-temp-FAC03-SN1")["configurationHash"] == outcome.configuration_hash
    events = [json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.getMessage()
              .startswith("twin_setup ")]
    assert events[-1]["outcome"] == "configured" and events[-1]["deviceId"] == "sensor-temp-FAC03-SN1"
    assert {"facility", "template", "configurationHash", "bytes", "durationMs", "hub"} <= set(events[-1])


def test_the_tags_identify_the_sensor_when_present(h):
    tags = {"sensorType": "vibration", "sensorTypeCode": "vib", "facility": "FAC07", "serial": "V1",
            "onboarding": {"allocatedAt": "2026-03-01T09:59:58Z"}}
    h.hub.create("sensor-vib-FAC07-V1", tags)
    assert h.deliver("sensor-vib-FAC07-V1").facility == "FAC07"
    assert h.hub.desired("sensor-vib-FAC07-V1")["alerts"]["velocityRmsWarning"] == 3.5
    assert h.hub.onboarding("sensor-vib-FAC07-V1")["allocatedAt"] == "2026-03-01T09:59:58Z"


def test_redelivery_writes_nothing(h):
    h.hub.create("sensor-temp-FAC01-SN1")
    assert [h.deliver("sensor-temp-FAC01-SN1").outcome for _ in range(3)] == ["configured", "unchanged", "unchanged"]
    assert h.hub.writes == {"sensor-temp-FAC01-SN1": 1}


def test_concurrent_duplicates_cost_one_write(h):
    devices = [f"sensor-flow-FAC02-S{i}" for i in range(5)]
    for device in devices:
        h.hub.create(device)
    deliveries = [d for d in devices for _ in range(3)]
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(h.deliver, deliveries))
    assert sorted(o.outcome for o in outcomes).count("configured") == 5
    assert h.hub.writes == dict.fromkeys(devices, 1)


def test_a_concurrent_write_is_detected_by_the_etag_and_the_twin_re_read(h):
    h.hub.create("sensor-temp-FAC01-SN2")

    def someone_else_writes(device_id):
        h.hub.update_twin(HOST, device_id, {"tags": {"owner": "ops"}}, None)

    h.hub.before_write = someone_else_writes
    outcome = h.deliver("sensor-temp-FAC01-SN2")
    assert (outcome.outcome, outcome.conflicts, h.hub.precondition_failures) == ("configured", 1, 1)
    assert h.hub.twins["sensor-temp-FAC01-SN2"]["tags"]["owner"] == "ops"
    assert h.hub.onboarding("sensor-temp-FAC01-SN2")["status"] == "configured"


def test_endless_conflicts_end_in_a_transient_failure(h):
    h.hub.create("sensor-temp-FAC01-SN3")
    h.hub.errors["update"] = [PreconditionFailed("x") for _ in range(10)]
    with pytest.raises(TransientError, match="changed 5 times"):
        h.deliver("sensor-temp-FAC01-SN3")


def test_a_device_deleted_before_or_during_setup_is_not_resurrected(h):
    assert h.deliver("sensor-temp-FAC01-GONE").outcome == "deviceGone"
    assert "sensor-temp-FAC01-GONE" not in h.hub.twins and h.hub.writes == {}
    h.hub.create("sensor-temp-FAC01-GONE2")
    h.hub.before_write = lambda device_id: h.hub.twins.pop(device_id)
    assert h.deliver("sensor-temp-FAC01-GONE2").outcome == "deviceGone"
    assert "sensor-temp-FAC01-GONE2" not in h.hub.twins


def test_throttling_is_retried_honouring_retry_after(h):
    h.hub.create("sensor-press-FAC11-SN1")
    h.hub.errors["update"] = [TransientError("HTTP 429", 2.0), TransientError("HTTP 503")]
    h.hub.errors["get"] = [TransientError("HTTP 429", 1.0)]
    outcome = h.deliver("sensor-press-FAC11-SN1")
    assert (outcome.outcome, outcome.retries) == ("configured", 3)
    assert 1.0 <= h.slept[0] <= 1.25 and 2.0 <= h.slept[1] <= 2.5 and len(h.slept) == 3  # Retry-After, jittered
    assert "spikeThreshold" not in h.hub.desired("sensor-press-FAC11-SN1")["alerts"]


def test_a_hub_that_stays_throttled_fails_the_invocation_for_redelivery(h, caplog):
    caplog.set_level(logging.INFO, logger="onboarding.events")
    h.hub.create("sensor-press-FAC11-SN2")
    h.hub.errors["update"] = [TransientError("HTTP 429", 1.0) for _ in range(4)]
    with pytest.raises(TransientError):
        h.deliver("sensor-press-FAC11-SN2")
    assert h.hub.writes == {} and len(h.slept) == 3
    assert '"outcome": "retry"' in caplog.records[-1].getMessage()
    assert h.deliver("sensor-press-FAC11-SN2").outcome == "configured"  # the redelivery succeeds


# -- permanent failures --------------------------------------------------------------------------------------
def test_unknown_template_is_recorded_on_the_twin_and_audited_once(h):
    del h.templates.blobs["flow-sensor.json"]
    h.hub.create("sensor-flow-FAC01-SN1")
    outcome = h.deliver("sensor-flow-FAC01-SN1")
    assert (outcome.outcome, outcome.reason_code, outcome.recorded) == ("failed", "unknown_template", True)
    assert h.hub.onboarding("sensor-flow-FAC01-SN1")["status"] == "failed"
    assert h.hub.onboarding("sensor-flow-FAC01-SN1")["reason"] == "unknown_template"
    assert h.hub.desired("sensor-flow-FAC01-SN1")["onboarding"] == {"state": "failed", "reason": "unknown_template"}
    assert [(row[2], row[3], row[4]) for row in h.db.inserted] == [("sensor-flow-FAC01-SN1", "error",
                                                                    "unknown_template")]
    assert json.loads(h.db.inserted[0][6])["stage"] == "twinSetup"
    assert h.deliver("sensor-flow-FAC01-SN1").outcome == "failed"  # acknowledged again, nothing new written
    assert h.hub.writes == {"sensor-flow-FAC01-SN1": 1} and len(h.db.inserted) == 1


@pytest.mark.parametrize("device_id, prepare, code", [
    ("sensor-temp-FAC99-SN1", lambda h: None, "unknown_facility"),
    ("sensor-temp-FAC01-SN9", lambda h: h.templates.put("temperature-sensor.json", b'{"templateVersion": 1}'),
     "invalid_template"),
    ("sensor-temp-FAC05-SN9", lambda h: h.db.overrides.append(("FAC05", "*", '{"alerts": {"a.b": 1}}')),
     "invalid_override"),
    ("sensor-gw-FAC01-GW9", lambda h: None, "edge_capability_mismatch"),  # created without iotEdge
    ("sensor-laser-FAC01-SN1", lambda h: None, "unknown_sensor_type"),
])
def test_permanent_problems_mark_the_twin_failed_with_their_code(h, device_id, prepare, code):
    prepare(h)
    h.hub.create(device_id)
    outcome = h.deliver(device_id)
    assert (outcome.outcome, outcome.reason_code) == ("failed", code)
    assert h.hub.onboarding(device_id)["reason"] == code


def test_a_refused_update_is_recorded_as_twin_update_rejected(h):
    h.hub.create("sensor-temp-FAC01-SN4")
    h.hub.errors["update"] = [HubRefused(403, "DeviceModelMaxPropertiesExceeded", "too big")]
    outcome = h.deliver("sensor-temp-FAC01-SN4")
    assert (outcome.outcome, outcome.reason_code) == ("failed", "twin_update_rejected")
    assert h.hub.onboarding("sensor-temp-FAC01-SN4")["reason"] == "twin_update_rejected"


def test_a_failure_never_discredits_a_configured_twin(h):
    h.hub.create("sensor-flow-FAC01-SN5")
    assert h.deliver("sensor-flow-FAC01-SN5").outcome == "configured"
    h.templates.put("flow-sensor.json", b"{broken")
    h.service.templates.invalidate()
    assert h.deliver("sensor-flow-FAC01-SN5").reason_code == "invalid_template"
    assert h.hub.onboarding("sensor-flow-FAC01-SN5")["status"] == "configured"
    assert h.hub.writes == {"sensor-flow-FAC01-SN5": 1} and h.db.inserted == []


def test_devices_that_are_not_sensors_are_left_alone(h):
    h.hub.create("my-test-device")
    assert h.deliver("my-test-device").outcome == "ignored"
    assert h.hub.writes == {} and h.db.inserted == []


def test_storage_down_is_transient_and_writes_nothing(h):
    h.templates.fail_next = 1
    h.hub.create("sensor-temp-FAC01-SN6")
    with pytest.raises(TransientError):
        h.deliver("sensor-temp-FAC01-SN6")
    assert h.hub.writes == {}


def test_unknown_hub_and_other_event_types():
    h = build_service()
    event = LifecycleEvent("e", "Microsoft.Devices.DeviceCreated", "eventGrid", "elsewhere", "sensor-temp-FAC01-A")
    with pytest.raises(UnknownHub):
        h.service.handle(event)
    assert h.service.handle(LifecycleEvent("e", "Microsoft.Devices.DeviceDeleted", "eventGrid")).outcome == "ignored"


# -- gateways and large configurations ------------------------------------------------------------------------
def test_a_gateway_gets_its_edge_deployment_before_the_twin_records_it(h):
    h.hub.create("sensor-gw-FAC01-GW1", edge=True)
    outcome = h.deliver("sensor-gw-FAC01-GW1")
    assert outcome.outcome == "configured" and outcome.edge
    template = json.loads((TEMPLATES / "gateway-sensor.json").read_text())
    assert h.hub.edge_applied["sensor-gw-FAC01-GW1"] == template["edge"]["modulesContent"]
    assert "edge" not in h.hub.desired("sensor-gw-FAC01-GW1")
    assert h.hub.onboarding("sensor-gw-FAC01-GW1")["edgeDeploymentHash"]


def test_a_refused_edge_deployment_is_edge_deployment_failed(h):
    h.hub.create("sensor-gw-FAC01-GW2", edge=True)
    h.hub.errors["edge"] = [HubRefused(400, "InvalidConfigurationContent", "bad")]
    assert h.deliver("sensor-gw-FAC01-GW2").reason_code == "edge_deployment_failed"


def test_an_oversized_configuration_lands_in_blob_with_a_pointer():
    h = build_service(limits=TwinLimits(budget_bytes=400))
    h.hub.create("sensor-vib-FAC07-BIG")
    outcome = h.deliver("sensor-vib-FAC07-BIG")
    assert outcome.storage == "blob"
    name = f"sensor-vib-FAC07-BIG/{outcome.configuration_hash}.json"
    stored = json.loads(h.configurations.blobs[name][0])
    assert stored["alerts"]["velocityRmsWarning"] == 3.5 and stored["templateVersion"] == "1.0.0"
    onboarding = h.hub.desired("sensor-vib-FAC07-BIG")["onboarding"]
    assert onboarding["configurationUrl"] == f"https://st.blob/device-configurations/{name}"
    assert onboarding["configurationHash"] == outcome.configuration_hash
    assert "alerts" not in h.hub.desired("sensor-vib-FAC07-BIG")


def test_the_blob_of_a_device_that_vanished_is_removed():
    h = build_service(limits=TwinLimits(budget_bytes=400))
    h.hub.create("sensor-vib-FAC07-GONE")
    h.hub.before_write = lambda device_id: h.hub.twins.pop(device_id)
    assert h.deliver("sensor-vib-FAC07-GONE").outcome == "deviceGone"
    assert h.configurations.blobs == {}


# -- reads of templates and overrides -------------------------------------------------------------------------
def test_300_devices_of_one_facility_read_the_template_once_and_the_overrides_once_per_ttl(h):
    devices = [f"sensor-temp-FAC03-N{i:03d}" for i in range(300)]
    for device in devices:
        h.hub.create(device)
    with ThreadPoolExecutor(16) as pool:
        assert {o.outcome for o in pool.map(h.deliver, devices)} == {"configured"}
    assert (h.templates.downloads, h.templates.not_modified, h.db.queries) == (1, 0, 1)
    h.clock.now += 61  # one TTL later: a conditional GET (304) and one more SQL query
    for device in devices[:50]:
        h.hub.twins.pop(device)
        h.hub.create(device)
        h.deliver(device)
    assert (h.templates.downloads, h.templates.not_modified, h.db.queries) == (1, 1, 2)


def test_a_changed_template_is_downloaded_once_and_changes_the_hash(h):
    h.hub.create("sensor-flow-FAC01-A")
    first = h.deliver("sensor-flow-FAC01-A").configuration_hash
    document = json.loads(h.templates.blobs["flow-sensor.json"][0])
    document["alerts"]["high"] = 300.0
    h.templates.put("flow-sensor.json", json.dumps(document).encode())
    h.clock.now += 61
    h.hub.create("sensor-flow-FAC01-B")
    second = h.deliver("sensor-flow-FAC01-B").configuration_hash
    assert first != second and h.templates.downloads == 2
    assert h.hub.desired("sensor-flow-FAC01-B")["alerts"]["high"] == 300.0
