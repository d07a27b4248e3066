"""Capacity growth counts new places taken, not devices that registered again: a renewal round or a reset fleet
re-provisions thousands of devices in a day without needing one more place on a hub."""

from __future__ import annotations

import json

from cli import main as cli_main
from shared.audit import AuditWriter
from tests.cli.hub_fixtures import fleet  # noqa: F401 - fleet: fixture

WEST = "hub-west.azure-devices.net"


def test_reprovisioned_allocations_are_not_growth(fleet, capsys):  # noqa: F811
    audit = AuditWriter(fleet)
    fleet.counts.update({WEST: 1000})
    for n in range(28):  # 28 new devices in the window: 2 a day over 14 days
        audit.provisioning(f"sensor-temp-FAC01-NEW{n:05d}", "allocated", None, WEST,
                           {"rule": "preferred", "reprovisioning": False})
    for n in range(700):  # the renewal round: devices already on the hub register again with new certificates
        audit.provisioning(f"sensor-temp-FAC01-OLD{n:05d}", "allocated", None, WEST,
                           {"rule": "current", "reprovisioning": True, "twinKept": True})
    assert cli_main.main(["--json", "capacity"]) == 0
    west = {r["region"]: r for r in json.loads(capsys.readouterr().out)["regions"]}["west"]
    assert west["growthPerDay"] == 2 and west["status"] == "ok" and west["daysToFull"] == 500
