"""The daily capacity_report timer, through its function, over real SQL (SQLite ODBC: iot_hubs, the audit's
allocations, hub_allocations) with the registry statistics, the alerts queue and the e-mail sender faked: the alert
message queued and e-mailed to the operations address, and the telemetry the workbook reads. No stack."""

from __future__ import annotations

import datetime as dt
import json
import logging
from types import SimpleNamespace

import pytest

from capacity import functions as capacity_functions
from capacity import wiring
from capacity.service import CapacityPlanner
from capacity.settings import CapacitySettings
from cert_lifecycle.alerts import AlertChannel
from tests.cli.hub_fixtures import HUBS, allocate, fleet  # noqa: F401 - fleet: fixture

pytestmark = pytest.mark.integration
WEST, CENTRAL, EAST = "hub-west.azure-devices.net", "hub-central.azure-devices.net", "hub-east.azure-devices.net"
NOW = dt.datetime(2026, 11, 2, 6, 30)


def timer_run(fleet, counts, email=True, fail_email=False):  # noqa: F811
    queued, mailed = [], []

    def send_content(to, content):
        if fail_email:
            raise RuntimeError("ACS refused")
        mailed.append((to, content))

    planner = CapacityPlanner(fleet, counts.__getitem__, list(HUBS), CapacitySettings(), now=lambda: NOW)
    cap = SimpleNamespace(planner=planner, settings=CapacitySettings(alert_email="ops@example.com"),
                          alerts=AlertChannel(queued.append, send_content if email else None))
    return cap, queued, mailed


@pytest.fixture
def events(caplog):
    caplog.set_level(logging.INFO, logger="onboarding.events")

    def read(name):
        found = []
        for record in caplog.records:
            event, _, payload = record.getMessage().partition(" {")
            if event == name:
                found.append(json.loads("{" + payload))
        return found
    return read


def test_a_region_past_a_threshold_is_queued_and_emailed_with_the_hubs_to_add(fleet, monkeypatch, events):  # noqa: F811
    allocate(fleet, WEST, 280, days_ago=2, now=NOW)  # 20 a day over the 14-day window
    allocate(fleet, EAST, 3, days_ago=30, now=NOW)  # outside it
    cap, queued, mailed = timer_run(fleet, {WEST: 1500, CENTRAL: 100, EAST: 10})
    monkeypatch.setattr(wiring, "capacity", lambda: cap)

    capacity_functions.capacity_report.build().get_user_function()(None)

    (message,) = queued
    assert message["type"] == "hubCapacityAlert" and message["id"] == "2026-11-02:capacity"
    assert message["to"] == ["ops@example.com"] and message["level"] == "warn"
    (west,) = message["regions"]
    assert (west["region"], west["devices"], west["limit"], west["growthPerDay"]) == ("west", 1500, 2000, 20)
    assert west["daysToFull"] == 25 and west["fullOn"] == "2026-11-27"
    # 1,500 + 90 days x 20 = 3,300 must stay below 80%: a limit above 4,125, so two more hubs of 2,000
    assert west["hubsToAdd"] == 2 and message["hubsToAdd"] == 2
    ((to, content),) = mailed
    assert to == ["ops@example.com"]
    assert content["subject"] == "[WARN] IoT hub capacity: west warn; add 2 hub(s)"
    assert "- west: warn, 1500/2000 (75%), 20/day, full in 25 days (2026-11-27); add 2 hub(s) of 2000 devices" \
        in content["plainText"]

    by_region = {e["region"]: e for e in events("hub_capacity")}
    assert set(by_region) == {"west", "central", "east"}
    assert by_region["west"] | {"event": "hub_capacity"} == {
        "event": "hub_capacity", "region": "west", "status": "warn", "hubs": 1, "acceptingHubs": 1,
        "devices": 1500, "limit": 2000, "utilisation": 0.75, "growthPerDay": 20.0, "daysToFull": 25.0,
        "hubsToAdd": 2}
    assert by_region["east"]["status"] == "ok" and by_region["east"]["daysToFull"] is None  # no growth: no date
    (sent,) = events("capacity_alert")
    assert sent == {"event": "capacity_alert", "level": "warn", "regions": 1, "hubsToAdd": 2, "emailed": True}


def test_every_region_ok_sends_nothing(fleet, monkeypatch, events):  # noqa: F811
    cap, queued, mailed = timer_run(fleet, {WEST: 10, CENTRAL: 10, EAST: 10})
    monkeypatch.setattr(wiring, "capacity", lambda: cap)
    capacity_functions.capacity_report.build().get_user_function()(None)
    assert queued == [] and mailed == [] and events("capacity_alert") == []
    assert len(events("hub_capacity")) == 3


def test_the_queue_copy_stands_when_email_fails_or_is_not_configured(fleet, monkeypatch, events):  # noqa: F811
    cap, queued, _ = timer_run(fleet, {WEST: 2000, CENTRAL: 10, EAST: 10}, fail_email=True)
    monkeypatch.setattr(wiring, "capacity", lambda: cap)
    capacity_functions.capacity_report.build().get_user_function()(None)
    assert queued[0]["level"] == "full" and events("capacity_alert")[-1]["emailed"] is False
    cap, queued, _ = timer_run(fleet, {WEST: 2000, CENTRAL: 10, EAST: 10}, email=False)
    monkeypatch.setattr(wiring, "capacity", lambda: cap)
    capacity_functions.capacity_report.build().get_user_function()(None)
    assert queued[0]["regions"][0]["status"] == "full"


def test_a_run_that_reaches_no_hub_fails(fleet, monkeypatch):  # noqa: F811
    def silent(host):
        raise RuntimeError("unreachable")

    planner = CapacityPlanner(fleet, silent, list(HUBS), CapacitySettings(), now=lambda: NOW)
    cap = SimpleNamespace(planner=planner, settings=CapacitySettings(), alerts=AlertChannel(lambda m: None, None))
    monkeypatch.setattr(wiring, "capacity", lambda: cap)
    with pytest.raises(RuntimeError, match="capacity report reached no hub"):
        capacity_functions.capacity_report.build().get_user_function()(None)
