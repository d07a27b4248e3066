"""`onboarding capacity [--json]`: the daily capacity report now, over real SQL (the audit's allocations, the
iot_hubs rows) with the registry statistics faked: one line per region plus the total; nothing is sent."""

from __future__ import annotations

import json

from cli import main as cli_main
from tests.cli.hub_fixtures import allocate, fleet  # noqa: F401 - fleet: fixture

WEST, CENTRAL, EAST = "hub-west.azure-devices.net", "hub-central.azure-devices.net", "hub-east.azure-devices.net"


def test_capacity_json_is_the_report(fleet, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CERT_ESCALATION_EMAIL", "ops@example.com")
    fleet.counts.update({WEST: 1700, CENTRAL: 100, EAST: 0})
    allocate(fleet, WEST, 70, days_ago=0.5)  # 70 in the window of 14 days: 5 a day
    allocate(fleet, CENTRAL, 14, days_ago=3.5)
    allocate(fleet, CENTRAL, 50, days_ago=20)  # before the window
    assert cli_main.main(["--json", "capacity"]) == 0
    data = json.loads(capsys.readouterr().out)
    regions = {r["region"]: r for r in data["regions"]}
    assert list(regions) == ["central", "east", "west"]
    west = regions["west"]
    assert (west["devices"], west["limit"], west["growthPerDay"], west["status"]) == (1700, 2000, 5, "warn")
    assert west["daysToFull"] == 60 and west["hubsToAdd"] == 1 and west["hubSize"] == 2000
    assert regions["central"]["growthPerDay"] == 1 and regions["central"]["status"] == "ok"
    assert regions["east"]["daysToFull"] is None and regions["east"]["fullOn"] is None
    assert data["total"]["devices"] == 1800 and data["total"]["limit"] == 6000 and data["total"]["status"] == "warn"
    # the configured hub without a row is noted, and the alert the timer would send is shown, not sent
    missing = "hub-west2.azure-devices.net is in IOT_HUB_HOSTNAMES but has no iot_hubs row"
    assert any(missing in note for note in data["notes"])
    assert data["alert"]["to"] == ["ops@example.com"] and [r["region"] for r in data["alert"]["regions"]] == ["west"]


def test_capacity_text_is_a_line_per_region_and_the_total(fleet, capsys):  # noqa: F811
    fleet.counts.update({WEST: 2000})
    assert cli_main.main(["capacity"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("capacity on ") and "growth: mean of 14 days" in lines[0]
    rows = [line for line in lines[2:] if not line.startswith("note:")]
    assert [r.split()[0] for r in rows] == ["central", "east", "west", "total"]
    west = rows[2].split()
    assert west[:2] == ["west", "full"] and "2000/2000" in rows[2] and rows[2].endswith("add 1")
    assert rows[3].split()[:2] == ["total", "full"]


def test_capacity_with_a_bad_setting_is_one_line(fleet, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CAPACITY_WARN_UTILISATION", "80")
    assert cli_main.main(["capacity"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("onboarding: error configuration_error: app setting "
                                               "CAPACITY_WARN_UTILISATION")


def test_capacity_counts_a_silent_hub_with_the_webhook_estimate_or_as_full(fleet, capsys):  # noqa: F811
    fleet.counts[EAST] = RuntimeError("throttled")
    assert cli_main.main(["--json", "capacity"]) == 0
    data = json.loads(capsys.readouterr().out)
    east = next(r for r in data["regions"] if r["region"] == "east")
    assert east["status"] == "full" and any("statistics unavailable; counted as full" in n for n in data["notes"])
    fleet.execute("INSERT INTO hub_allocations (host_name, allocations, anchor_devices, anchor_allocations) "
                  "VALUES (?, 30, 100, 10)", [EAST])
    assert cli_main.main(["--json", "capacity"]) == 0
    data = json.loads(capsys.readouterr().out)
    east = next(r for r in data["regions"] if r["region"] == "east")
    assert east["devices"] == 120 and east["status"] == "ok"
