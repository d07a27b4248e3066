"""A small fleet through the same code path as `make demo`: sign_csr, DPS, allocate, hub, Event Grid, twin
setup, devices applying their configuration; with the demo's incidents and its independent verification."""

from __future__ import annotations

import json

import pytest

from local.fleet.report import write_report
from local.fleet.scenario import Scenario, ScenarioOptions, summary_rows
from tests.stack_helpers import app_environment

pytestmark = pytest.mark.integration


STACK_SETTINGS = {"CERT_SUPERSEDED_GRACE_HOURS": "0", "FUNNEL_STUCK_ACKNOWLEDGED_SECONDS": "15",
                  "FUNNEL_LIVE_MARGIN_SECONDS": "1"}


def test_two_plants_roll_out_with_zero_configuration_errors(stack, services, tmp_path):
    with app_environment(stack.settings_path):
        options = ScenarioOptions(facilities=2, per_facility=10, seed=11, workers=8, configure_timeout_s=60,
                                  spill_hub="localhost:8441", spill_devices=4)
        result = Scenario(services, stack.state_dir, options).run()

    assert result.ok, result.failures
    rows = summary_rows(result)
    assert rows["configured"] == 19  # 20 planned, one revoked; plus the unknown-facility sensor refused
    # The revoked sensor is refused by DPS itself: the revoke function left a disabled individual enrollment
    assert rows["refusals"] == {"enrollment_disabled": 1, "unknown_facility": 1}
    revoked = result.incidents["revoked"]
    assert "refused by DPS (individual enrollment disabled), webhook not asked" in revoked
    assert result.revocation["disallowedAtDps"] == [revoked.split(":")[0]]
    assert rows["configurationErrors"] == 0
    # FAC01 and FAC02 are west plants; the west hub had room for all but 4, so some went across regions
    assert rows["byHub"]["localhost:8441"] < 19
    assert sum(count for hub, count in rows["byHub"].items() if hub != "localhost:8441") >= 1
    assert "placed elsewhere" in result.incidents["spillHubLimit"]  # verified: the hub held no more than its limit
    assert result.storm["rewritten"] == 0 and result.storm["deliveries"] == 3 * result.storm["devices"]
    gateways = [o for o in result.outcomes if o.device.is_gateway]
    assert len(gateways) == 4 and all(o.status == "configured" for o in gateways)
    limit = services.database.fetch_one(
        "SELECT max_devices FROM iot_hubs WHERE host_name = ?", ["localhost:8441"])["max_devices"]
    assert limit == 2000  # the spill incident's limit is undone

    # time travel: two aged sensors per plant renewed through scan, queue, device CSR and collector; each then
    # refused by its hub with the new certificate, re-provisioned through DPS to the same hub, connected again
    life = result.lifecycle
    assert life["agedSensors"] == 4
    assert life["installed"] == life["renewedTwoYears"] == 4
    assert life["refusedUnauthorized"] == life["reprovisioned"] == life["connected"] == life["completed"] == 4
    assert life["supersededRevoked"] == 4
    for outcome in result.aged:
        twin = services.iothub().get_twin(outcome.hub, outcome.device.device_id)
        assert twin.tags["certificate"]["serialNumber"] == format(outcome.sensor.certificate.serial_number, "X")
        assert twin.desired["onboarding"]["state"] == "configured"  # the hub kept its twin (migrate data)

    # the funnel: every sensor that sent its first reading is live in the product's record (SQL), the silent ones
    # (the incident) are flagged stuck on their twins and listed in their manager's digest
    funnel = result.funnel
    assert funnel["silent"] == 3 and funnel["silentStuck"] == 3 and funnel["silentInDigest"] == 3
    assert funnel["senders"] == funnel["sendersLive"] == 19 - 3
    assert funnel["stages"]["acknowledged"] >= funnel["stages"]["live"] + 3
    assert rows["telemetryP50"] is not None and rows["telemetryP95"] >= rows["telemetryP50"]
    for device_id in result.incidents["silent"].split(", "):
        twin = services.iothub().get_twin(next(o.hub for o in result.outcomes if o.device.device_id == device_id),
                                          device_id)
        assert twin.tags["onboarding"]["stuck"]["stage"] == "acknowledged"

    report = write_report(result, tmp_path / "report")
    page = report.read_text()
    assert "Sensors per hub" in page and "<svg" in page and "Onboarding funnel" in page
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["summary"]["configured"] == 19
