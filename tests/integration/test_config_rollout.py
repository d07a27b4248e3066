"""Configuration changes on the whole stack: 20 FAC03 temperature sensors online (local.fleet's live sensors), then
template uploads delivered as BlobCreated by the stack's poller to on_template_changed: an invalid one starts no
rollout, a changed one reaches every twin in waves without a new DeviceCreated, a canary that fails halts its
rollout, and rollback restores the previous version's values."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest

from local.fleet.live import LiveFleet, change_template_and_wait
from tests.stack_helpers import app_environment
from twin_setup.rollouts import RolloutStore

pytestmark = pytest.mark.integration

TEMPLATE = json.loads((Path(__file__).resolve().parents[2] / "infra" / "templates" /
                       "temperature-sensor.json").read_text())
GATEWAY = json.loads((Path(__file__).resolve().parents[2] / "infra" / "templates" / "gateway-sensor.json").read_text())
STACK_SETTINGS = {"ROLLOUT_ACK_POLL_SECONDS": "1", "ROLLOUT_ACK_TIMEOUT_SECONDS": "30",
                  "ROLLOUT_CANARY_SHARE": "0.1", "ROLLOUT_WRITES_PER_SECOND": "20",
                  # the final sweep waits for every worker's caches: a short TTL keeps the test short
                  "TWIN_TEMPLATE_CACHE_SECONDS": "5", "TWIN_OVERRIDES_CACHE_SECONDS": "5"}


def twins(services, devices):
    hub = services.iothub()
    return {d: hub.get_twin(h, d) for h, d in devices}


def wait_for_rollout(services, etag_after: float, predicate, timeout_s: float = 60):
    store = RolloutStore(services.database)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [r for r in store.recent(50) if r.created_at and r.created_at.timestamp() >= etag_after
                 and predicate(r)]
        if found:
            return found[0]
        time.sleep(0.5)
    return None


@pytest.fixture(scope="module")
def fleet(stack, services):
    with app_environment(stack.settings_path):
        live = LiveFleet(services, stack.state_dir, "FAC03", "temp", 20, seed=18, telemetry_s=3600)
        outcomes = live.start()
        assert [o.status for o in outcomes].count("configured") == 20, live.summary()
        yield live
        live.stop()


def test_template_changes_roll_out_in_waves_halt_on_a_failing_canary_and_roll_back(stack, services, fleet):
    devices = [(o.hub, o.device.device_id) for o in fleet.outcomes]
    before = twins(services, [*devices])
    allocated = {d: t.tags["onboarding"]["allocatedAt"] for d, t in before.items()}
    seed_hash = {t.tags["onboarding"]["configurationHash"] for t in before.values()}
    assert len(seed_hash) == 1

    with app_environment(stack.settings_path):
        # 1. a template that fails validation starts no rollout: a rejected record, no twin written
        started = time.time() - 1
        bad = copy.deepcopy(TEMPLATE)
        bad["templateVersion"] = "1.0.1"
        bad["telemetry"]["interval seconds"] = 5
        container = services.blob_service.get_container_client(services.settings.templates_container)
        container.upload_blob("temperature-sensor.json", json.dumps(bad).encode(), overwrite=True)
        rejected = wait_for_rollout(services, started, lambda r: r.template == "temperature")
        assert rejected is not None and rejected.state == "rejected" and rejected.reason == "invalid_template"
        assert rejected.affected == 0 and "interval seconds" in rejected.detail
        assert {t.tags["onboarding"]["configurationHash"] for t in twins(services, devices).values()} == seed_hash

        # 2. a changed template reaches every twin in waves (canary first), acknowledged by the sensors
        v2 = copy.deepcopy(TEMPLATE)
        v2["templateVersion"] = "1.1.0"
        v2["telemetry"]["batchSize"] = 10
        v2["alerts"]["low"] = -25.0
        status = change_template_and_wait(services, "temperature", v2, devices, timeout_s=120)
        assert status["state"] == "completed", status
        assert status["kind"] == "template" and status["previousVersion"] == "1.0.0"
        assert status["templateVersion"] == "1.1.0" and status["affected"] == 20
        assert "telemetry.batchSize" in status["detail"] and "alerts.low" in status["detail"]
        waves = status["waves"]
        assert [w["sensors"] for w in waves] == [2, 18] and waves[0]["canary"]
        assert waves[0]["states"] == {"acknowledged": 2}  # the live sensors reported the new hash
        assert waves[1]["states"] == {"acknowledged": 18}  # every wave is checked, not only the canary
        now = twins(services, devices)
        for device_id, twin in now.items():
            assert twin.desired["telemetry"]["batchSize"] == 10 and twin.desired["alerts"]["low"] == -25.0
            assert twin.tags["onboarding"]["templateVersion"] == "1.1.0"
            assert twin.tags["onboarding"]["allocatedAt"] == allocated[device_id]  # no new DeviceCreated/allocation
        v2_rollout = status["rolloutId"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
                s.state.hash == now[s.sensor.device_id].tags["onboarding"]["configurationHash"] for s in fleet.live):
            time.sleep(0.5)
        assert all(s.state.applied >= 2 for s in fleet.live), fleet.summary()

        # 3. a canary whose sensors fail halts the rollout: an edge deployment for sensors that are not IoT Edge
        v3 = copy.deepcopy(v2)
        v3["templateVersion"] = "1.2.0"
        v3["telemetry"]["batchSize"] = 5
        v3["edge"] = GATEWAY["edge"]
        status = change_template_and_wait(services, "temperature", v3, devices[:1], timeout_s=60)
        assert status["state"] == "halted" and status["reason"] == "canary_failed", status
        assert status["waves"][0]["states"] == {"failed": 2} and status["waves"][1]["states"] == {"pending": 18}
        assert set(status["failed"].values()) == {"edge_capability_mismatch"}
        assert all(t.desired["telemetry"]["batchSize"] == 10 for t in twins(services, devices).values())

        # 4. rollback: the halted rollout's previous version (1.1.0) goes back into the blob; then rolling back the
        #    1.1.0 rollout restores the seed's 1.0.0 values on every twin
        from twin_setup.wiring import build_changes

        changes = build_changes(services)
        restored = changes.rollback(status["rolloutId"], "test")
        assert restored is not None and restored.kind == "rollback" and restored.template_version == "1.1.0"
        assert changes.store.get(status["rolloutId"]).state == "rolled_back"
        current = json.loads(container.download_blob("temperature-sensor.json").readall())
        assert current["templateVersion"] == "1.1.0" and "edge" not in current
        back = changes.rollback(v2_rollout, "test")
        assert back.template_version == "1.0.0" and back.affected == 20
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and changes.store.get(back.rollout_id).state == "running":
            time.sleep(1)
        final = changes.status(back.rollout_id)
        assert final["state"] == "completed", final
        for twin in twins(services, devices).values():
            assert twin.desired["telemetry"]["batchSize"] == 1 and twin.desired["alerts"]["low"] == -20.0
            assert twin.tags["onboarding"]["templateVersion"] == "1.0.0"
            assert twin.tags["onboarding"]["configurationHash"] in seed_hash
