"""Configuration drift and the rollout gaps: the pure comparison (missed change, edit by hand, unacknowledged),
deleted override rows, every wave's acknowledgement, the final sweep; then the drift check and the periodic
override check through twin setup's writer, with the in-memory hub of tests/unit/test_rollout_service.py and the
real SQL record."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field

import pytest

from local.seed import migrations
from shared.identity import parse_device_id
from shared.sql import Database
from tests.unit.test_rollout_service import Container, QueryHub, drain, sensor_tags, upload
from tests.unit.test_twin_service import HOST, TEMPLATES, FakeDatabase, build_service
from twin_setup.changes import Changes, InstalledFleet
from twin_setup.configuration import Template, build_configuration
from twin_setup.drift import EDITED, MISSED, UNACKNOWLEDGED, DriftCheck, DriftSettings, compare, drift_query, held
from twin_setup.plan import TwinView, plan_configuration
from twin_setup.rollout import (
    ACKNOWLEDGED,
    FAILED,
    PENDING,
    RUNNING,
    WRITTEN,
    DeviceProgress,
    RolloutPolicy,
    next_step,
    override_changes,
    wave_verdict,
)
from twin_setup.rollouts import RolloutStore
from twin_setup.settings import TwinLimits

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
ESSENTIAL = ("telemetry", "firmware", "diagnostics")


def configured_twin(device_id: str = "sensor-temp-FAC01-SN000001", **template_changes) -> tuple[TwinView, object]:
    """A twin as twin setup writes it for the seed template (+ changes), and that configuration."""
    document = json.loads((TEMPLATES / "temperature-sensor.json").read_text())
    document.update(template_changes)
    template = Template("temperature", document, document["templateVersion"], "e1")
    config = build_configuration(parse_device_id(device_id), template, [], TwinLimits())
    empty = TwinView(device_id, "e0", {}, {}, False)
    plan = plan_configuration(empty, config, TwinLimits(), ESSENTIAL, "https://st/x.json", "2026-03-01T10:00:00Z")
    tags = plan.patch["tags"]
    desired = {k: v for k, v in plan.patch["properties"]["desired"].items() if v is not None}
    return TwinView(device_id, "e1", tags, desired, False), config


# -- the comparison (pure) ---------------------------------------------------------------------------------------
def test_a_twin_as_the_writer_left_it_has_no_drift():
    twin, config = configured_twin()
    assert compare(twin, {"configuration": {"hash": config.hash}}, config, ESSENTIAL, NOW, 3600) is None
    assert compare(twin, {}, config, ESSENTIAL, NOW, 3600) is None  # never reported: nothing to lag


def test_a_template_change_the_sensor_never_got_is_missed():
    twin, _ = configured_twin()
    _, newer = configured_twin(templateVersion="1.1.0")
    assert compare(twin, {}, newer, ESSENTIAL, NOW, 3600) == MISSED


def test_desired_properties_edited_by_hand_are_edited_drift_even_with_the_right_hash():
    twin, config = configured_twin()
    edited = copy.deepcopy(twin.desired)
    edited["telemetry"]["intervalSeconds"] = 1
    assert compare(TwinView(twin.device_id, "e2", twin.tags, edited, False), {}, config, ESSENTIAL, NOW, 3600) \
        == EDITED
    removed = {k: v for k, v in twin.desired.items() if k != "alerts"}
    assert compare(TwinView(twin.device_id, "e2", twin.tags, removed, False), {}, config, ESSENTIAL, NOW, 3600) \
        == EDITED
    pointer = copy.deepcopy(twin.desired)
    pointer["onboarding"]["configurationHash"] = "0" * 64
    assert compare(TwinView(twin.device_id, "e2", twin.tags, pointer, False), {}, config, ESSENTIAL, NOW, 3600) \
        == EDITED


def test_an_offloaded_twin_keeps_only_essential_sections_and_its_url_is_not_compared():
    twin, config = configured_twin()
    tags = {**twin.tags, "onboarding": {**twin.tags["onboarding"], "storage": "blob"}}
    onboarding = {**twin.desired["onboarding"], "configurationUrl": "https://st/x.json?sig=new",
                  "configurationBytes": 900}
    essentials = {k: twin.desired[k] for k in ESSENTIAL}
    assert compare(TwinView(twin.device_id, "e", tags, {**essentials, "onboarding": onboarding}, False), {}, config,
                   ESSENTIAL, NOW, 3600) is None
    with_alerts = {**essentials, "alerts": twin.desired["alerts"], "onboarding": onboarding}
    assert compare(TwinView(twin.device_id, "e", tags, with_alerts, False), {}, config, ESSENTIAL, NOW, 3600) \
        == EDITED


def test_a_sensor_that_reports_another_hash_long_after_the_write_has_not_acknowledged():
    twin, config = configured_twin()  # written at 10:00
    old = {"configuration": {"hash": "0" * 64}}
    assert compare(twin, old, config, ESSENTIAL, NOW, 3 * 3600) is None  # within the grace period
    assert compare(twin, old, config, ESSENTIAL, NOW, 3600) == UNACKNOWLEDGED


def test_running_and_halted_rollouts_hold_the_sensors_they_cover():
    @dataclass
    class R:
        kind: str
        template: str | None = None
        facility: str | None = None

    assert held([R("template", "temperature")], "FAC01", "temperature")
    assert not held([R("template", "humidity")], "FAC01", "temperature")
    assert held([R("overrides", None, "FAC01")], "FAC01", "temperature")  # '*' covers every type
    assert not held([R("overrides", "temperature", "FAC02")], "FAC01", "temperature")


def test_the_drift_query_filters_on_the_hub_and_refuses_unvalidated_values():
    assert drift_query("temperature", "FAC03") == ("SELECT * FROM devices WHERE tags.onboarding.status = "
                                                   "'configured' AND tags.sensorType = 'temperature' AND "
                                                   "tags.facility = 'FAC03'")
    with pytest.raises(Exception, match="capitals"):
        drift_query(None, "FAC' OR 1=1")


# -- deleted overrides, every wave, the sweep (pure) --------------------------------------------------------------
def test_a_deleted_override_row_is_a_key_gone_from_the_last_check():
    seen = {("FAC03", "temperature"): "2026-01-01T00:00:00.000000Z", ("FAC03", "*"): "2026-01-01T00:00:00.000000Z"}
    now = {("FAC03", "*"): "2026-01-01T00:00:00.000000Z", ("FAC07", "*"): "2026-02-01T00:00:00.000000Z"}
    found = override_changes(now, seen, "2026-01-15T00:00:00.000000Z")
    assert found.deleted == [("FAC03", "temperature", "2026-01-01T00:00:00.000000Z")]
    assert found.changed == [("FAC07", "*", "2026-02-01T00:00:00.000000Z")]
    first = override_changes(now, {}, None)  # first run: a baseline, nothing changed or deleted
    assert first.changed == [] and first.deleted == []


def test_every_wave_must_acknowledge_in_time_not_only_the_canary():
    policy = RolloutPolicy(ack_timeout_s=60)
    late = [DeviceProgress("a", ACKNOWLEDGED, True, 70), DeviceProgress("b", WRITTEN, True, 61)]
    verdict = wave_verdict(late, 0, policy, canary=False)
    assert verdict.outcome == "fail" and verdict.reason == "wave_not_acknowledged" and "b" in verdict.detail
    assert wave_verdict([DeviceProgress("b", WRITTEN, True, 30)], 0, policy, canary=False).outcome == "wait"
    # a later wave's failed write is recorded, not halted on; the canary's is
    failed = [DeviceProgress("c", FAILED), DeviceProgress("d", WRITTEN, False)]
    assert wave_verdict(failed, 0, policy, canary=False).outcome == "pass"
    assert wave_verdict(failed, 0, policy, canary=True).reason == "canary_failed"


def test_next_step_verifies_each_wave_then_sweeps_then_completes():
    states = {0: [ACKNOWLEDGED], 1: [PENDING]}
    assert (next_step(RUNNING, 1, 2, states, swept=False).action, next_step(RUNNING, 1, 2, states).wave) == \
        ("write", 1)
    states[1] = [WRITTEN]
    assert next_step(RUNNING, 1, 2, states, swept=False).action == "verify"
    assert next_step(RUNNING, 2, 2, states, swept=False).action == "sweep"
    assert next_step(RUNNING, 2, 2, states, swept=True).action == "complete"


# -- the drift check and the override check through the writer ---------------------------------------------------
class OverrideDatabase(FakeDatabase):
    """FakeDatabase plus the periodic check's key query (SELECT facility_code, sensor_type, updated_at)."""

    def fetch_all(self, sql, params=()):
        if not params and "FROM facility_overrides" in sql:
            return [{"facility_code": f, "sensor_type": t, "updated_at": "2026-01-01T00:00:00Z"}
                    for f, t, _ in self.overrides]
        return super().fetch_all(sql, params)


@dataclass
class DriftHub(QueryHub):
    queries: Counter = field(default_factory=Counter)

    def query(self, host, text, page_size=1000, max_pages=None, budget=None):
        self.queries[host] += 1
        for twin in super().query(host, text, page_size, max_pages, budget):
            if (twin.tags.get("onboarding") or {}).get("status") == "configured":
                yield twin


@pytest.fixture
def fleet(tmp_path):
    h = build_service()
    db_fake = OverrideDatabase()
    h.service.overrides._db = db_fake
    templates = Container({p.name: p.read_bytes() for p in TEMPLATES.glob("*-sensor.json")},
                          url="https://st.blob/sensor-configurations")
    h.service.templates._blobs._factory = lambda: templates
    h.service.templates._blobs._container = None
    hub = DriftHub()
    h.service.hub = hub
    db = Database(f"Driver=SQLite3;Database={tmp_path / 'db.sqlite'}")
    migrations.apply_migrations(db)
    sent: list = []
    ids = iter(f"r{i}" for i in range(1, 100))
    store = RolloutStore(db)
    changes = Changes(h.service, store, InstalledFleet(hub, (HOST,)), lambda m, d: sent.append((m, d)),
                      clock=lambda: 0.0, sleep=lambda s: None, new_id=lambda: next(ids))
    changes.policy = RolloutPolicy(canary_share=0.1, ack_timeout_s=0, ack_poll_s=1)
    changes.sweep_after_s = 0
    devices = [f"sensor-temp-FAC0{1 + i % 3}-SN{i:06d}" for i in range(12)]
    for device_id in devices:
        hub.create(device_id, sensor_tags(device_id))
        h.service.reconfigure(HOST, device_id)
    drift = DriftCheck(h.service, store, (HOST,), DriftSettings(), now=lambda: NOW, sleep=lambda s: None)
    yield h, hub, templates, changes, sent, devices, drift, db_fake
    db.close()


def test_a_hand_edit_on_the_hub_is_found_and_re_applied_through_the_writer(fleet):
    _h, hub, _templates, _changes, _sent, devices, drift, _db = fleet
    victim = devices[0]
    good = copy.deepcopy(hub.desired(victim))
    hub.update_twin(HOST, victim, {"properties": {"desired": {"telemetry": {"intervalSeconds": 1}}}}, None)
    report = drift.run(apply=False)
    assert (report.scanned, report.drifted, report.count(EDITED)) == (12, 1, 1)
    assert hub.desired(victim)["telemetry"]["intervalSeconds"] == 1  # report only: nothing written
    writes = dict(hub.writes)
    report = drift.run(apply=True)
    assert report.repaired == 1 and report.findings[0].outcome == "configured"
    assert hub.desired(victim) == good
    assert {d: hub.writes[d] - writes[d] for d in devices} == {d: int(d == victim) for d in devices}
    assert drift.run(apply=False).drifted == 0


def test_a_missed_template_change_is_re_applied_unless_a_rollout_holds_it(fleet):
    _h, hub, templates, changes, sent, devices, drift, _db = fleet
    etag = upload(templates, templateVersion="1.1.0", telemetry={"batchSize": 10})
    rollout = changes.start_from_blob("temperature-sensor.json", etag, "t")
    report = drift.run(apply=True)
    assert report.held == 12 and report.drifted == 0  # the running rollout carries them, not the drift check
    changes.store.set_state(rollout.rollout_id, "rolled_back")  # as if its events were lost: nobody carries it
    report = drift.run(apply=True)
    assert report.count(MISSED) == 12 and report.repaired == 12
    assert all(hub.onboarding(d)["templateVersion"] == "1.1.0" for d in devices)
    sent.clear()


def test_a_deleted_override_row_starts_a_rollout_that_removes_its_values(fleet):
    _h, hub, _templates, changes, sent, devices, drift, db = fleet
    fac03 = [d for d in devices if "-FAC03-" in d]
    assert all(hub.desired(d)["telemetry"]["intervalSeconds"] == 30 for d in fac03)  # the FAC03 override
    assert changes.check() == []  # baseline, and the keys recorded
    db.overrides = [row for row in db.overrides if row[:2] != ("FAC03", "temperature")]
    started = changes.check()
    assert [(r.kind, r.facility, r.template, r.affected) for r in started] == \
        [("overrides", "FAC03", "temperature", len(fac03))]
    assert started[0].source_etag.startswith("deleted:")
    drain(changes, sent)
    assert changes.status(started[0].rollout_id)["state"] == "completed"
    template = json.loads((TEMPLATES / "temperature-sensor.json").read_text())
    for device_id in fac03:
        desired = hub.desired(device_id)
        assert desired["telemetry"]["intervalSeconds"] == template["telemetry"]["intervalSeconds"]
        assert desired["alerts"]["high"] == template["alerts"]["high"]
        assert desired["diagnostics"]["logLevel"] == "debug"  # FAC03's '*' row stays
    assert changes.check() == []  # the deletion starts nothing twice
    assert drift.run(apply=False).drifted == 0


def test_a_wave_after_the_canary_that_does_not_acknowledge_halts_the_rollout(fleet):
    _h, hub, templates, changes, sent, devices, _drift, _db = fleet
    for device_id in devices:  # every sensor reports its configuration: all can acknowledge
        hub.twins[device_id]["properties"]["reported"]["configuration"] = {
            "hash": hub.onboarding(device_id)["configurationHash"]}
    changes.policy = RolloutPolicy(canary_share=0.1, ack_timeout_s=0, ack_poll_s=1)
    etag = upload(templates, templateVersion="1.1.0", telemetry={"batchSize": 10})
    rollout = changes.start_from_blob("temperature-sensor.json", etag, "t")
    canary = {d.device_id for d in changes.store.devices(rollout.rollout_id, 0)}
    original = hub._update_twin

    def acknowledging(device_id, patch, etag):  # only the canary's firmware applies and reports the new hash
        twin = original(device_id, patch, etag)
        if device_id in canary:
            hub.twins[device_id]["properties"]["reported"]["configuration"] = {
                "hash": hub.onboarding(device_id)["configurationHash"]}
        return twin

    hub._update_twin = acknowledging
    drain(changes, sent)
    status = changes.status(rollout.rollout_id)
    assert status["state"] == "halted" and status["reason"] == "wave_not_acknowledged", status
    assert status["waves"][0]["states"] == {"acknowledged": len(canary)}
    assert status["waves"][1]["states"] == {"written": len(devices) - len(canary)}


def test_the_sweep_writes_a_sensor_another_worker_configured_from_its_cached_old_template(fleet):
    h, hub, templates, changes, sent, devices, drift, _db = fleet
    old = h.service.templates.get("temperature")  # what another worker's cache still holds
    etag = upload(templates, templateVersion="1.1.0", telemetry={"batchSize": 10})
    rollout = changes.start_from_blob("temperature-sensor.json", etag, "t")
    late = "sensor-temp-FAC02-SN999999"
    hub.create(late, sensor_tags(late))
    h.service.reconfigure(HOST, late, old)  # DeviceCreated handled with the stale copy, after the rollout's diff
    assert hub.onboarding(late)["templateVersion"] == "1.0.0"
    drain(changes, sent)
    status = changes.status(rollout.rollout_id)
    assert status["state"] == "completed" and status["affected"] == len(devices) + 1
    assert [w["sensors"] for w in status["waves"]] == [2, 10, 1]  # canary, the rest, the sweep's late joiner
    assert hub.onboarding(late)["templateVersion"] == "1.1.0"
    assert drift.run(apply=False).drifted == 0


def test_a_run_budget_spent_leaves_hubs_and_writes_to_the_next_run(fleet):
    from shared.retry import RunBudget

    _h, hub, _templates, _changes, _sent, devices, drift, _db = fleet
    hub.update_twin(HOST, devices[0], {"properties": {"desired": {"telemetry": {"intervalSeconds": 1}}}}, None)
    spent = RunBudget("check_config_drift", 0)
    report = drift.run(apply=True, budget=spent)
    assert report.deferred_hubs == [HOST] and report.scanned == 0 and spent.left == {"hub": 1}
    report = drift.run(apply=True, budget=RunBudget("check_config_drift", 240))
    assert report.repaired == 1 and report.deferred_hubs == []
