"""The capacity report: reads each hub's row (iot_hubs) and registry statistics, and each region's allocations per
day from the audit (provisioning_events), projects them (capacity/projection.py), emits one telemetry event per
region for the workbook and, from the daily timer, alerts the operations address when a region is at warn or full.

What the webhook can use is what is counted: a hub with a row that the app settings do not name (IOT_HUB_HOSTNAMES)
takes no device, and a hub they name without a row has no limit (allocation/capacity.py); both are left out and
noted. A hub whose statistics do not answer counts with the webhook's SQL estimate (hub_allocations), else as full.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from capacity.projection import CapacityReport, HubUse, alert_message, project
from capacity.settings import CapacitySettings
from shared import telemetry
from shared.hubs import HubRow, HubTable
from shared.retry import RunBudget
from shared.sql import Database
from shared.times import sql_utc, utc_now

log = logging.getLogger(__name__)
# How an allocation's audit details mark a re-provisioning: shared/audit.py writes json.dumps(sort_keys=True).
REPROVISIONED = '%"reprovisioning": true%'


@dataclass(frozen=True)
class HubCount:
    hub: HubRow
    devices: int | None  # None: statistics unavailable and no estimate
    source: str  # statistics | estimate | unavailable | not_configured
    configured: bool

    def to_dict(self) -> dict:
        return {**self.hub.to_dict(), "devices": self.devices, "devicesFrom": self.source,
                "configured": self.configured}


class CapacityPlanner:
    def __init__(self, database: Database, device_count: Callable[[str], int], configured_hosts: list[str],
                 settings: CapacitySettings, now: Callable[[], dt.datetime] = utc_now):
        self._db = database
        self._hubs = HubTable(database)
        self._device_count = device_count
        self._configured = list(configured_hosts)
        self._settings = settings
        self._now = now

    # -- reads ----------------------------------------------------------------------------------------------------
    def _statistics(self, host: str) -> int | None:
        try:
            return int(self._device_count(host))
        except Exception as exc:  # noqa: BLE001 - one silent hub must not stop the report
            log.warning("capacity: %s statistics unavailable (%s)", host, type(exc).__name__)
            return None

    def _estimates(self) -> dict[str, int]:
        rows = self._db.fetch_all("SELECT host_name, allocations, anchor_devices, anchor_allocations "
                                  "FROM hub_allocations WHERE anchor_devices IS NOT NULL")
        return {r["host_name"]: int(r["anchor_devices"]) + int(r["allocations"]) - int(r["anchor_allocations"] or 0)
                for r in rows}

    def hub_counts(self, budget: RunBudget | None = None) -> list[HubCount]:
        """Every hub on record with its device count (registry statistics, read in parallel). A hub whose
        statistics are not in when the run's budget is spent counts as one that did not answer (the webhook's
        estimate, else full); its call is left to finish in the background, and the next report reads it again."""
        rows = self._hubs.all()
        configured = set(self._configured)
        read = [h.host_name for h in rows if h.host_name in configured]
        pool = ThreadPoolExecutor(max_workers=max(1, min(16, len(read))), thread_name_prefix="capacity")
        futures = {host: pool.submit(self._statistics, host) for host in read}
        wait(list(futures.values()), timeout=None if budget is None else budget.remaining_s() - budget.reserve_s)
        pool.shutdown(wait=False)
        counts: dict[str, int | None] = {}
        for host, future in futures.items():
            if future.done():
                counts[host] = future.result()
            else:
                counts[host] = None
                if budget is not None:
                    budget.spent()
                    budget.defer("statistics")
                log.warning("capacity: %s statistics not in within the run's budget", host)
        estimates = self._estimates() if any(v is None for v in counts.values()) else {}
        found = []
        for hub in rows:
            if hub.host_name not in configured:
                found.append(HubCount(hub, None, "not_configured", False))
            elif counts[hub.host_name] is not None:
                found.append(HubCount(hub, counts[hub.host_name], "statistics", True))
            elif hub.host_name in estimates:
                found.append(HubCount(hub, estimates[hub.host_name], "estimate", True))
            else:
                found.append(HubCount(hub, None, "unavailable", True))
        return found

    def daily_allocations(self, regions: dict[str, str], days: int) -> dict[str, list[int]]:
        """Per region, the devices allocated on each of the last `days` 24-hour periods (oldest first), from the
        audit: distinct registrations with outcome allocated, by the hub they went to (regions: host -> region).
        A re-provisioning (a renewed certificate, a device reset: details.reprovisioning, allocation/service.py)
        takes no new place, so it is not growth."""
        end = sql_utc(self._now(), whole_seconds=False)
        daily: dict[str, list[int]] = {}
        for back in range(days, 0, -1):
            start, stop = end - dt.timedelta(days=back), end - dt.timedelta(days=back - 1)
            rows = self._db.fetch_all(
                "SELECT hub, COUNT(DISTINCT registration_id) AS devices FROM provisioning_events "
                "WHERE outcome = 'allocated' AND at >= ? AND at < ? AND hub IS NOT NULL "
                "AND (details IS NULL OR details NOT LIKE ?) GROUP BY hub", [start, stop, REPROVISIONED])
            per_region: dict[str, int] = {}
            for r in rows:
                region = regions.get(r["hub"])
                if region is not None:
                    per_region[region] = per_region.get(region, 0) + int(r["devices"])
            for region in set(regions.values()) | set(per_region):
                daily.setdefault(region, [0] * (days - back)).append(per_region.get(region, 0))
        return daily

    # -- the report -----------------------------------------------------------------------------------------------
    def report(self, budget: RunBudget | None = None) -> tuple[CapacityReport, list[HubCount]]:
        counts = self.hub_counts(budget)
        notes, uses = [], []
        on_record = {c.hub.host_name for c in counts}
        for c in counts:
            if not c.configured:
                notes.append(f"{c.hub.host_name} ({c.hub.region}) has a row but is not in IOT_HUB_HOSTNAMES: "
                             "the app does not use it")
                continue
            devices = c.devices
            if devices is None:
                notes.append(f"{c.hub.host_name}: statistics unavailable; counted as full")
                devices = c.hub.max_devices
            elif c.source == "estimate":
                notes.append(f"{c.hub.host_name}: statistics unavailable; the webhook's estimate used")
            uses.append(HubUse(c.hub.host_name, c.hub.region, devices, c.hub.max_devices, c.hub.accepting))
        for host in self._configured:
            if host not in on_record:
                notes.append(f"{host} is in IOT_HUB_HOSTNAMES but has no iot_hubs row: it takes no device "
                             "(`onboarding hubs add`)")
        days = self._settings.growth_days
        daily = self.daily_allocations({c.hub.host_name: c.hub.region for c in counts}, days)
        report = project(uses, daily, self._now().date(), self._settings.thresholds, days, notes)
        return report, counts


def emit_report(report: CapacityReport) -> None:
    """One hub_capacity event per region (the workbook's capacity tile reads the latest of each)."""
    for r in report.regions:
        telemetry.emit("hub_capacity", region=r.region, status=r.status, hubs=r.hubs, acceptingHubs=r.accepting_hubs,
                       devices=r.devices, limit=r.limit,
                       utilisation=None if r.utilisation is None else round(r.utilisation, 4),
                       growthPerDay=round(r.growth_per_day, 2),
                       daysToFull=None if r.days_to_full is None else round(r.days_to_full, 1),
                       hubsToAdd=r.hubs_to_add)


def alert(report: CapacityReport, to: list[str], queue: Callable[[dict], None],
          email: Callable[[list[str], dict], None] | None) -> dict | None:
    """Queue (always) and e-mail (when configured and someone is to be told) the alert for the regions at warn or
    full; None when every region is ok. A queue failure raises (the timer run fails and shows it); an e-mail
    failure is logged and emitted, the queued copy stands."""
    from capacity.projection import email_content

    message = alert_message(report, to)
    if message is None:
        return None
    queue(message)
    emailed = False
    if email is not None and to:
        try:
            email(to, email_content(message))
            emailed = True
        except Exception as exc:  # noqa: BLE001 - the queue holds the alert; mail is best effort
            log.error("capacity alert %s not e-mailed: %s", message["id"], type(exc).__name__)
    telemetry.emit("capacity_alert", level=message["level"], regions=len(message["regions"]),
                   hubsToAdd=message["hubsToAdd"], emailed=emailed)
    return message
