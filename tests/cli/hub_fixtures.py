"""A SQLite database with the schema, three regions of facilities and a hub each, and the environment the CLI reads
(SQL_CONNECTION_STRING, IOT_HUB_HOSTNAMES, REGIONAL_CAS); registry statistics faked per host."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from local.seed.seed import SCHEMA, schema_statements
from shared.sql import Database

HUBS = {"hub-west.azure-devices.net": "west", "hub-central.azure-devices.net": "central",
        "hub-east.azure-devices.net": "east"}
NEW = "hub-west2.azure-devices.net"


def _clear_caches() -> None:
    from capacity import wiring
    from shared import bootstrap

    for cached in (bootstrap.services, wiring.capacity):  # a test may have replaced one with a plain function
        getattr(cached, "cache_clear", lambda: None)()


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    path = tmp_path / "hubs.db"
    db = Database(f"Driver=SQLite3;Database={path}")
    for statement in schema_statements(SCHEMA.read_text()):
        db.execute(statement)
    for i, (host, region) in enumerate(HUBS.items()):
        db.execute("INSERT INTO iot_hubs (host_name, region, max_devices, max_daily_messages, accepting) "
                   "VALUES (?, ?, 2000, 400000, 1)", [host, region])
        db.execute("INSERT INTO facilities (facility_code, name, region, preferred_hub, manager_email, active) "
                   "VALUES (?, ?, ?, ?, 'm@example.com', 1)", [f"FAC0{i + 1}", f"Plant {i + 1}", region, host])
    counts: dict[str, int | Exception] = dict.fromkeys(HUBS, 0)

    def device_count(self, host, budget=None):
        value = counts[host]
        if isinstance(value, Exception):
            raise value
        return value

    from shared.iothub import IotHub

    monkeypatch.setattr(IotHub, "device_count", device_count)
    for name in ("IOT_HUB_CONNECTION_STRINGS", "CAPACITY_ALERT_EMAIL", "CERT_ESCALATION_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SQL_CONNECTION_STRING", f"Driver=SQLite3;Database={path}")
    monkeypatch.setenv("IOT_HUB_HOSTNAMES", ",".join([*HUBS, NEW]))
    monkeypatch.setenv("REGIONAL_CAS", "west=intermediate-ca-west,central=intermediate-ca-central,"
                                       "east=intermediate-ca-east")
    _clear_caches()
    db.counts = counts
    yield db
    _clear_caches()
    db.close()


def allocate(db: Database, host: str, devices: int, days_ago: float, now: dt.datetime | None = None) -> None:
    """Audit rows of `devices` allocations to host, days_ago before now."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    at = now - dt.timedelta(days=days_ago)
    for _ in range(devices):
        db.execute("INSERT INTO provisioning_events (event_id, at, registration_id, outcome, reason_code, hub, "
                   "details) VALUES (?, ?, ?, 'allocated', NULL, ?, NULL)",
                   [str(uuid.uuid4()), at, f"sensor-temp-FAC01-{uuid.uuid4().hex[:8]}", host])
