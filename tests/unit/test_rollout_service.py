"""Rollouts through twin setup's own writer, with in-memory IoT Hub and Blob fakes and the real SQL record (SQLite
through the ODBC driver, the migrations applied): starting from a template upload, the canary, halting, resuming,
rolling back, and the periodic override check."""

from __future__ import annotations

import copy
import json

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from local.seed import migrations
from shared.errors import OnboardingError
from shared.iothub import Twin
from shared.sql import Database
from tests.unit.test_twin_service import HOST, TEMPLATES, FakeContainer, FakeHub, build_service
from twin_setup.changes import Changes, InstalledFleet
from twin_setup.rollout import RolloutPolicy
from twin_setup.rollouts import RolloutStore


class Container(FakeContainer):
    """FakeContainer plus conditional uploads and properties, as shared.storage.BlobStore uses them."""

    def get_blob_client(self, name: str):
        container, blob = self, super().get_blob_client(name)

        class Blob:
            download_blob = blob.download_blob

            def get_blob_properties(self):
                if name not in container.blobs:
                    raise ResourceNotFoundError("BlobNotFound")
                from tests.unit.test_twin_service import _Props

                return _Props(len(container.blobs[name][0]), container.blobs[name][1])

            def upload_blob(self, data, content_settings=None, metadata=None, overwrite=False, etag=None,
                            match_condition=None):
                if not overwrite and name in container.blobs:
                    raise ResourceExistsError("BlobAlreadyExists")
                if match_condition == MatchConditions.IfNotModified and container.blobs.get(name, (0, None))[1] != etag:
                    raise ResourceModifiedError("ConditionNotMet")
                container.put(name, bytes(data))
                return {"etag": container.blobs[name][1]}

        return Blob()


class QueryHub(FakeHub):
    def query(self, host, text, page_size=1000, max_pages=None, budget=None):
        for doc in list(self.twins.values()):
            if "'temperature'" in text and doc["tags"].get("sensorType") != "temperature":
                continue
            if "'FAC03'" in text and doc["tags"].get("facility") != "FAC03":
                continue
            yield Twin.from_json(host, copy.deepcopy(doc))


def sensor_tags(device_id: str) -> dict:
    _, code, facility, serial = device_id.split("-")
    return {"sensorType": "temperature", "sensorTypeCode": code, "facility": facility, "serial": serial,
            "onboarding": {"allocatedAt": "2026-01-01T00:00:00Z"}}


@pytest.fixture
def world(tmp_path):
    h = build_service()
    templates = Container({p.name: p.read_bytes() for p in TEMPLATES.glob("*-sensor.json")},
                          url="https://st.blob/sensor-configurations")
    h.service.templates._blobs._factory = lambda: templates
    h.service.templates._blobs._container = None
    hub = QueryHub()
    h.service.hub = hub
    db = Database(f"Driver=SQLite3;Database={tmp_path / 'db.sqlite'}")
    migrations.apply_migrations(db)
    sent: list[tuple[dict, float]] = []
    ids = iter(f"r{i}" for i in range(1, 100))
    changes = Changes(h.service, RolloutStore(db), InstalledFleet(hub, (HOST,)), lambda m, d: sent.append((m, d)),
                      clock=lambda: 0.0, sleep=lambda s: None, new_id=lambda: next(ids))
    changes.policy = RolloutPolicy(canary_share=0.1, ack_timeout_s=0, ack_poll_s=1)
    changes.sweep_after_s = 0  # no other worker's cache to wait for
    devices = [f"sensor-temp-FAC0{1 + i % 3}-SN{i:06d}" for i in range(20)]
    for device_id in devices:
        hub.create(device_id, sensor_tags(device_id))
        h.service.reconfigure(HOST, device_id)  # installed with the seed's 1.0.0
    yield h, hub, templates, changes, sent, devices
    db.close()


def upload(templates: Container, **changes) -> str:
    document = json.loads((TEMPLATES / "temperature-sensor.json").read_text())
    for section, values in changes.items():
        if section == "templateVersion":
            document[section] = values
        else:
            document[section] = {**document.get(section, {}), **values}
    templates.put("temperature-sensor.json", json.dumps(document).encode())
    return templates.blobs["temperature-sensor.json"][1]


def drain(changes: Changes, sent: list) -> None:
    while sent:
        message, _ = sent.pop(0)
        delay = changes.advance(message["rolloutId"])
        if delay is not None:
            changes.schedule(message["rolloutId"], delay)


def test_an_upload_reaches_every_installed_sensor_in_waves_through_the_one_writer(world):
    _h, hub, templates, changes, sent, devices = world
    etag = upload(templates, templateVersion="1.1.0", telemetry={"batchSize": 10})
    rollout = changes.start_from_blob("temperature-sensor.json", etag.strip('"'), "eventgrid:test")
    assert rollout.state == "running" and rollout.affected == 20 and rollout.previous_version == "1.0.0"
    assert "telemetry.batchSize" in rollout.detail
    assert changes.start_from_blob("temperature-sensor.json", etag, "eventgrid:again") is None  # redelivery
    drain(changes, sent)
    status = changes.status(rollout.rollout_id)
    assert status["state"] == "completed"
    assert [(w["sensors"], w["states"]) for w in status["waves"]] == [(2, {"written": 2}), (18, {"written": 18})]
    for device_id in devices:
        assert hub.desired(device_id)["telemetry"]["batchSize"] == 10
        assert hub.onboarding(device_id)["templateVersion"] == "1.1.0"
        assert hub.writes[device_id] == 2  # installed once, changed once
    assert "versions/temperature/1.1.0.json" in templates.blobs


def test_an_invalid_template_is_recorded_as_rejected_and_writes_nothing(world):
    _h, hub, templates, changes, sent, devices = world
    templates.put("temperature-sensor.json", b'{"templateVersion": "2.0.0", "telemetry": {"a b": 1}}')
    rollout = changes.start_from_blob("temperature-sensor.json", "0x1", "eventgrid:test")
    assert rollout.state == "rejected" and rollout.reason == "invalid_template" and rollout.affected == 0
    assert sent == [] and all(hub.writes[d] == 1 for d in devices)


def test_a_failing_canary_halts_and_a_resume_or_a_rollback_follows(world):
    _h, hub, templates, changes, sent, devices = world
    upload(templates, templateVersion="1.1.0", telemetry={"batchSize": 10})
    good = changes.start_from_blob("temperature-sensor.json", "e", "t")
    drain(changes, sent)
    edge = json.loads((TEMPLATES / "gateway-sensor.json").read_text())["edge"]
    etag = upload(templates, templateVersion="1.2.0", telemetry={"batchSize": 5}, edge=edge)
    bad = changes.start_from_blob("temperature-sensor.json", etag, "t")
    drain(changes, sent)
    status = changes.status(bad.rollout_id)
    assert status["state"] == "halted" and status["reason"] == "canary_failed"
    assert status["waves"][1]["states"] == {"pending": 18}
    assert all(hub.desired(d)["telemetry"]["batchSize"] == 10 for d in devices)
    # rollback of the good rollout: 1.0.0 goes back into the blob and onto every twin
    back = changes.rollback(good.rollout_id, "cli:test")
    assert back.kind == "rollback" and back.template_version == "1.0.0"
    drain(changes, sent)
    assert changes.status(back.rollout_id)["state"] == "completed"
    assert json.loads(templates.blobs["temperature-sensor.json"][0])["templateVersion"] == "1.0.0"
    assert all(hub.desired(d)["telemetry"]["batchSize"] == 1 for d in devices)


def test_resume_continues_a_halted_rollout_past_its_canary(world):
    _h, hub, templates, changes, sent, devices = world
    etag = upload(templates, templateVersion="1.1.0", telemetry={"batchSize": 10})
    rollout = changes.start_from_blob("temperature-sensor.json", etag, "t")
    changes.advance(rollout.rollout_id)  # canary written
    with pytest.raises(OnboardingError, match="not halted"):
        changes.resume(rollout.rollout_id, "t")
    with pytest.raises(OnboardingError, match="no rollout"):
        changes.resume("r-none", "t")
    changes.store.set_state(rollout.rollout_id, "halted", "canary_not_acknowledged")
    sent.clear()
    changes.resume(rollout.rollout_id, "cli:test")
    drain(changes, sent)
    assert changes.status(rollout.rollout_id)["state"] == "completed"
    assert all(hub.desired(d)["telemetry"]["batchSize"] == 10 for d in devices)


def test_a_preview_changes_nothing_and_names_counts_and_fields(world):
    _h, hub, _templates, changes, sent, devices = world
    document = json.loads((TEMPLATES / "temperature-sensor.json").read_text())
    document["templateVersion"], document["alerts"]["high"] = "1.5.0", 70.0
    preview = changes.preview_template("temperature", json.dumps(document).encode()).as_dict()
    assert preview["valid"] and preview["changing"] == 20 and preview["currentVersion"] == "1.0.0"
    assert {g["facility"]: g["changing"] for g in preview["groups"]} == {"FAC01": 7, "FAC02": 7, "FAC03": 6}
    assert preview["groups"][0]["fields"] == ["alerts.high", "templateVersion"]
    assert all(hub.writes[d] == 1 for d in devices) and sent == []
    bad = changes.preview_overrides("FAC03", "temperature", '{"telemetry": {"bad key": 1}}').as_dict()
    assert not bad["valid"] and bad["validationError"]["code"] == "invalid_override"


def test_a_sensor_overwritten_from_a_stale_cache_after_its_wave_is_written_again_by_the_sweep(world):
    """Found by `make chaos`: a DeviceCreated write from another worker's cached 1.0.0 landed after the rollout had
    written 1.1.0 to the same sensor; the sweep must not skip it because it is already in the rollout."""
    h, hub, templates, changes, sent, devices = world
    etag = upload(templates, templateVersion="1.1.0", telemetry={"batchSize": 10})
    rollout = changes.start_from_blob("temperature-sensor.json", etag.strip('"'), "eventgrid:test")
    stale = h.service.templates.version("temperature", "1.0.0")  # the installed version, kept for rollback
    assert stale is not None
    changes.sweep_after_s = 3600  # the other worker's cache has not expired yet: every wave, but no sweep
    for _ in range(50):
        current = changes.store.get(rollout.rollout_id)
        if current.current_wave >= current.wave_count or not sent:
            break
        message, _ = sent.pop(0)
        delay = changes.advance(message["rolloutId"])
        if delay is not None:
            changes.schedule(message["rolloutId"], delay)
    assert all(hub.desired(d)["telemetry"]["batchSize"] == 10 for d in devices)
    overwritten = devices[7]
    h.service.reconfigure(HOST, overwritten, stale[0])  # the stale DeviceCreated write, after the rollout's
    assert hub.onboarding(overwritten)["templateVersion"] == "1.0.0"

    changes.sweep_after_s = 0
    drain(changes, sent)
    status = changes.status(rollout.rollout_id)
    assert status["state"] == "completed"
    assert status["waves"][-1]["sensors"] == 1 and status["waves"][-1]["states"] == {"written": 1}
    assert hub.desired(overwritten)["telemetry"]["batchSize"] == 10
    assert hub.onboarding(overwritten)["templateVersion"] == "1.1.0"
