"""Configuration drift and the rollout gaps on the whole stack, with 20 FAC03 temperature sensors online (local.fleet's
live sensors, which apply each configuration and report its hash): a sensor edited by hand on the hub is found by
the drift check and re-applied through twin setup's writer; a deleted override row starts a rollout that takes the
row's values off its sensors; a wave after the canary whose sensors do not acknowledge halts its rollout."""

from __future__ import annotations

import time

import pytest

from local.fleet.live import LiveFleet
from tests.stack_helpers import app_environment
from twin_setup.rollout import RolloutPolicy

pytestmark = pytest.mark.integration

STACK_SETTINGS = {"ROLLOUT_ACK_POLL_SECONDS": "1", "ROLLOUT_ACK_TIMEOUT_SECONDS": "30",
                  "ROLLOUT_WRITES_PER_SECOND": "20",
                  "TWIN_TEMPLATE_CACHE_SECONDS": "5", "TWIN_OVERRIDES_CACHE_SECONDS": "5"}


@pytest.fixture(scope="module")
def fleet(stack, services):
    with app_environment(stack.settings_path):
        live = LiveFleet(services, stack.state_dir, "FAC03", "temp", 20, seed=19, telemetry_s=3600)
        outcomes = live.start()
        assert [o.status for o in outcomes].count("configured") == 20, live.summary()
        yield live
        live.stop()


def twins(services, fleet):
    hub = services.iothub()
    return {o.device.device_id: hub.get_twin(o.hub, o.device.device_id) for o in fleet.outcomes}


def test_a_sensor_edited_by_hand_on_the_hub_is_found_and_re_applied(stack, services, fleet):
    from twin_setup.drift import EDITED, build_drift

    victim = fleet.outcomes[0]
    before = twins(services, fleet)[victim.device.device_id]
    with app_environment(stack.settings_path):
        drift = build_drift(services)
        assert drift.run(apply=False).drifted == 0
        # an operator edits the desired properties in the portal: the tags still carry the configuration's hash
        services.iothub().update_twin(victim.hub, victim.device.device_id,
                                      {"properties": {"desired": {"telemetry": {"intervalSeconds": 1}}}}, None)
        found = drift.run(apply=False)
        assert found.drifted == 1 and found.scanned == 20
        assert [(f.device_id, f.kind) for f in found.findings] == [(victim.device.device_id, EDITED)]
        repaired = drift.run(apply=True)
        assert repaired.repaired == 1
        after = twins(services, fleet)[victim.device.device_id]
        assert after.desired["telemetry"] == before.desired["telemetry"]
        assert after.tags["onboarding"]["configurationHash"] == before.tags["onboarding"]["configurationHash"]
        assert drift.run(apply=False).drifted == 0
        audited = services.database.fetch_all(
            "SELECT reason_code FROM provisioning_events WHERE registration_id = ? AND outcome = 'configured'",
            [victim.device.device_id])
        assert [r["reason_code"] for r in audited] == ["configuration_drift"]


def test_a_deleted_override_row_starts_a_rollout_that_removes_its_values(stack, services, fleet):
    from twin_setup.drift import build_drift
    from twin_setup.wiring import build_changes

    template = services.blob_service.get_container_client(services.settings.templates_container)
    import json

    defaults = json.loads(template.download_blob("temperature-sensor.json").readall())
    assert all(t.desired["telemetry"]["intervalSeconds"] == 30 for t in twins(services, fleet).values())
    with app_environment(stack.settings_path):
        changes = build_changes(services)
        changes.check("test")  # the key set as the check sees it (the timer may have recorded it already)
        services.database.execute("DELETE FROM facility_overrides WHERE facility_code = ? AND sensor_type = ?",
                                  ["FAC03", "temperature"])
        started = changes.check("test")
        if not started:  # the stack's own timer saw the deletion first: its rollout is the one
            row = services.database.fetch_one(
                "SELECT rollout_id FROM config_rollouts WHERE source = ? AND source_etag LIKE 'deleted:%'",
                ["facility_overrides/FAC03/temperature"])
            started = [changes.store.get(row["rollout_id"])]
        rollout = started[0]
        assert rollout.kind == "overrides" and rollout.affected == 20
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and changes.store.get(rollout.rollout_id).state == "running":
            time.sleep(1)
        status = changes.status(rollout.rollout_id)
        assert status["state"] == "completed", status
        for twin in twins(services, fleet).values():
            assert twin.desired["telemetry"]["intervalSeconds"] == defaults["telemetry"]["intervalSeconds"]
            assert twin.desired["alerts"]["high"] == defaults["alerts"]["high"]
            assert twin.desired["diagnostics"]["logLevel"] == "debug"  # FAC03's '*' row stays
        assert changes.check("test") == []  # the deletion starts nothing twice
        assert build_drift(services).run(apply=False).drifted == 0


def test_a_wave_after_the_canary_that_does_not_acknowledge_halts_the_rollout(stack, services, fleet):
    """Driven in-process (its own queue) so the test decides when the sensors go offline: after the canary."""
    from twin_setup.changes import Changes, InstalledFleet
    from twin_setup.rollouts import RolloutStore
    from twin_setup.wiring import build_twin_setup

    with app_environment(stack.settings_path):
        setup = build_twin_setup(services)
        queue: list = []
        changes = Changes(setup, RolloutStore(services.database), InstalledFleet(setup.hub, setup.settings.hub_hosts),
                          lambda message, delay: queue.append(message))
        changes.policy = RolloutPolicy(canary_share=0.1, ack_timeout_s=4, ack_poll_s=0.5, writes_per_second=20)
        # The facility's '*' row changes without a new updated_at: the stack's own check starts nothing for it.
        services.database.execute("UPDATE facility_overrides SET overrides = ? WHERE facility_code = ? AND "
                                  "sensor_type = ?",
                                  ['{"diagnostics": {"logLevel": "debug"}, "telemetry": {"batchSize": 7}}', "FAC03",
                                   "*"])
        rollout = changes.start_from_overrides("FAC03", "*", "wave-halt-test", "test")
        assert rollout is not None and rollout.affected == 20 and rollout.wave_count == 2

        def advance_until(predicate, timeout_s: float = 60) -> None:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not predicate():
                delay = changes.advance(rollout.rollout_id)
                if delay is None:
                    return
                time.sleep(min(delay, 0.5))

        advance_until(lambda: changes.store.get(rollout.rollout_id).current_wave == 1)
        status = changes.status(rollout.rollout_id)
        assert status["state"] == "running" and status["waves"][0]["states"] == {"acknowledged": 2}, status
        fleet.stop()  # the rest of the fleet goes offline: wave 1 is written and never acknowledged
        advance_until(lambda: changes.store.get(rollout.rollout_id).state != "running")
        status = changes.status(rollout.rollout_id)
        assert status["state"] == "halted" and status["reason"] == "wave_not_acknowledged", status
        assert status["waves"][1]["states"] == {"written": 18}
