"""The iot_hubs table: which hubs exist, their region, limits and whether they take new devices.

Hubs are data (README "Adding a hub"): the allocation webhook (allocation/capacity.py) reads these rows for every
hub the app setting IOT_HUB_HOSTNAMES names and DPS links; operators add and change rows with `onboarding hubs`;
the capacity planner (capacity/) reads them with the hubs' registry statistics. No product code names a hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import OnboardingError
from shared.sql import Database

SQL_INT_MAX = 2_147_483_647  # iot_hubs.max_devices and max_daily_messages are INT
S1_DAILY_MESSAGES = 400_000  # one S1 unit (docs/contracts.md, IoT Hub quotas): the default message limit of a new hub
# A host name as DPS and the app name it: {hub}.azure-devices.net, or host:port locally. No scheme, no path.
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::\d{1,5})?$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class HubRow:
    host_name: str
    region: str
    max_devices: int
    max_daily_messages: int
    accepting: bool

    def to_dict(self) -> dict:
        return {"host": self.host_name, "region": self.region, "maxDevices": self.max_devices,
                "maxDailyMessages": self.max_daily_messages, "accepting": self.accepting}


def _row(r: dict) -> HubRow:
    return HubRow(r["host_name"], r["region"], int(r["max_devices"]), int(r["max_daily_messages"]),
                  bool(r["accepting"]))


def _limit(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= SQL_INT_MAX:
        raise OnboardingError("invalid_request", f"{name} must be a whole number from 1 to {SQL_INT_MAX}, got {value}")
    return value


class HubTable:
    """Reads and writes iot_hubs (parameterised statements; each its own transaction)."""

    def __init__(self, database: Database):
        self._db = database

    def all(self) -> list[HubRow]:
        rows = self._db.fetch_all(
            "SELECT host_name, region, max_devices, max_daily_messages, accepting FROM iot_hubs")
        return sorted((_row(r) for r in rows), key=lambda h: (h.region, h.host_name))

    def get(self, host_name: str) -> HubRow | None:
        row = self._db.fetch_one("SELECT host_name, region, max_devices, max_daily_messages, accepting FROM iot_hubs "
                                 "WHERE host_name = ?", [host_name])
        return None if row is None else _row(row)

    def known_regions(self, configured: list[str] = ()) -> set[str]:
        """The regions a hub may be added to: those of the facilities and hubs on record, and `configured` (the
        regions of REGIONAL_CAS)."""
        rows = self._db.fetch_all("SELECT DISTINCT region FROM facilities") + \
            self._db.fetch_all("SELECT DISTINCT region FROM iot_hubs")
        return {r["region"] for r in rows} | set(configured)

    def add(self, host_name: str, region: str, max_devices: int, max_daily_messages: int = S1_DAILY_MESSAGES,
            accepting: bool = True, regions: set[str] | None = None) -> HubRow:
        """Insert the row; invalid_request for a malformed host, an unknown region (when `regions` is given), a
        limit out of range or a host already on record."""
        host_name, region = host_name.strip(), region.strip()
        if not _HOST.match(host_name):
            raise OnboardingError("invalid_request", f"hub host name {host_name!r} is not a host name "
                                                     "({hub}.azure-devices.net, or host:port locally)")
        if not _REGION.match(region):
            raise OnboardingError("invalid_request", f"region {region!r} is not a region name")
        if regions is not None and region not in regions:
            raise OnboardingError("invalid_request", f"unknown region {region!r} (known: {', '.join(sorted(regions))})")
        _limit("--max-devices", max_devices)
        _limit("--max-daily-messages", max_daily_messages)
        if self.get(host_name) is not None:
            raise OnboardingError("invalid_request", f"hub {host_name} already exists (change it with `hubs set`)")
        try:
            self._db.execute("INSERT INTO iot_hubs (host_name, region, max_devices, max_daily_messages, accepting) "
                             "VALUES (?, ?, ?, ?, ?)",
                             [host_name, region, max_devices, max_daily_messages, 1 if accepting else 0])
        except Exception as exc:
            if self.get(host_name) is not None:  # another operator added it between the check and the insert
                raise OnboardingError("invalid_request", f"hub {host_name} already exists") from exc
            raise
        return self.get(host_name)

    def update(self, host_name: str, accepting: bool | None = None, max_devices: int | None = None,
               max_daily_messages: int | None = None) -> HubRow:
        """Change what is given; invalid_request for an unknown host or a limit out of range."""
        changes: list[tuple[str, int]] = []
        if accepting is not None:
            changes.append(("accepting", 1 if accepting else 0))
        if max_devices is not None:
            changes.append(("max_devices", _limit("--max-devices", max_devices)))
        if max_daily_messages is not None:
            changes.append(("max_daily_messages", _limit("--max-daily-messages", max_daily_messages)))
        if not changes:
            raise OnboardingError("invalid_request", "nothing to change: give --accepting, --max-devices or "
                                                     "--max-daily-messages")
        assignments = ", ".join(f"{column} = ?" for column, _ in changes)  # column names fixed above
        updated = self._db.execute(f"UPDATE iot_hubs SET {assignments} WHERE host_name = ?",  # noqa: S608
                                   [*(value for _, value in changes), host_name])
        if not updated:
            raise OnboardingError("invalid_request", f"no hub {host_name} (see `onboarding hubs list`)")
        return self.get(host_name)
