"""Capacity planning, pure: per region, use against limits, growth, days until full, status and the hubs to add.

Inputs are plain data: each hub's region, device count (registry statistics), limit (iot_hubs.max_devices) and
accepting flag, and per region the devices allocated on each of the last N days (provisioning_events, outcome
allocated). The webhook places a new device only on an accepting hub below its limit (allocation/policy.py), so a
region's limit is the sum of its accepting hubs' limits and its use the devices on them; devices on a hub that no
longer accepts are reported beside, not counted against the limit.

Growth per day is the mean of the daily allocations over the window (days without any count as 0). Why the mean:
the allocations per day are the rate at which places are taken, which is what runs a region full; a least-squares
slope over those counts would measure how that rate changes (acceleration), which rollouts in bursts (a plant's lot
on one day, nothing for a week) make noise. A least-squares fit of the device count itself would need the history of
the counts, which nothing records, and over a window with one burst it gives about the same rate as the mean. It
leaves out re-provisionings (a device that registers again keeps its place; the audit's details.reprovisioning) and
subtracts no deletions, so it errs on the side of a fuller region.

Days until full: free places / growth per day, None when nothing grows (no projected date); 0 when the region has no
free place or no accepting hub. Status: `full` (no free place), `warn` (use >= the warning share, default 80%, or
full within the warning days, default 30), else `ok`. Hubs to add: enough hubs of the region's usual size (its
largest limit; else the fleet's) that after `headroom_days` (default 90) of growth at the current rate use stays
below the warning share.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

OK, WARN, FULL = "ok", "warn", "full"
RANK = {OK: 0, WARN: 1, FULL: 2}


@dataclass(frozen=True)
class HubUse:
    host_name: str
    region: str
    devices: int
    max_devices: int
    accepting: bool


@dataclass(frozen=True)
class Thresholds:
    warn_utilisation: float = 0.8
    warn_days: float = 30
    headroom_days: float = 90


@dataclass(frozen=True)
class RegionProjection:
    region: str
    hubs: int
    accepting_hubs: int
    devices: int  # on the accepting hubs: what counts against the limit
    limit: int  # sum of the accepting hubs' max_devices
    devices_not_accepting: int  # on hubs that take no new devices
    growth_per_day: float
    days_to_full: float | None
    full_on: dt.date | None
    status: str
    hubs_to_add: int | None  # None: no hub size known anywhere to recommend with
    hub_size: int | None
    window_days: int

    @property
    def free(self) -> int:
        return max(0, self.limit - self.devices)

    @property
    def utilisation(self) -> float | None:
        return self.devices / self.limit if self.limit > 0 else None

    def to_dict(self) -> dict:
        return {
            "region": self.region, "status": self.status, "hubs": self.hubs, "acceptingHubs": self.accepting_hubs,
            "devices": self.devices, "limit": self.limit, "free": self.free,
            "utilisation": None if self.utilisation is None else round(self.utilisation, 4),
            "devicesOnHubsNotAccepting": self.devices_not_accepting,
            "growthPerDay": round(self.growth_per_day, 2),
            "daysToFull": None if self.days_to_full is None else round(self.days_to_full, 1),
            "fullOn": None if self.full_on is None else self.full_on.isoformat(),
            "hubsToAdd": self.hubs_to_add, "hubSize": self.hub_size, "windowDays": self.window_days,
        }


@dataclass(frozen=True)
class CapacityReport:
    date: dt.date
    thresholds: Thresholds
    regions: list[RegionProjection]
    total: RegionProjection
    notes: list[str] = field(default_factory=list)

    @property
    def alerting(self) -> list[RegionProjection]:
        return [r for r in self.regions if r.status != OK]

    def to_dict(self) -> dict:
        t = self.thresholds
        return {"date": self.date.isoformat(), "regions": [r.to_dict() for r in self.regions],
                "total": self.total.to_dict(), "notes": list(self.notes),
                "thresholds": {"warnUtilisation": t.warn_utilisation, "warnDays": t.warn_days,
                               "headroomDays": t.headroom_days}}


def growth_per_day(daily: Sequence[int | float]) -> float:
    """Mean of the daily counts (the window's days without allocations included as 0s); 0 for no days."""
    return sum(daily) / len(daily) if daily else 0.0


def days_to_full(devices: int, limit: int, growth: float) -> float | None:
    if limit <= 0 or devices >= limit:
        return 0.0
    if growth <= 0:
        return None
    return (limit - devices) / growth


def status_of(devices: int, limit: int, days: float | None, thresholds: Thresholds) -> str:
    if limit <= 0 or devices >= limit:
        return FULL
    if devices / limit >= thresholds.warn_utilisation or (days is not None and days <= thresholds.warn_days):
        return WARN
    return OK


def hubs_to_add(devices: int, limit: int, growth: float, hub_size: int | None, thresholds: Thresholds) -> int | None:
    """The fewest hubs of hub_size after which devices + headroom_days of growth stay below the warning share of
    the limit (a region without an accepting hub gets at least one); None when more are needed and no hub size is
    known."""
    target = Fraction(devices) + Fraction(max(0.0, growth)) * Fraction(thresholds.headroom_days)
    deficit = target / Fraction(str(thresholds.warn_utilisation)) - max(0, limit)  # the limit must exceed it
    if deficit < 0:
        return 0
    if not hub_size or hub_size <= 0:
        return None
    return math.floor(deficit / hub_size) + 1


def project_region(region: str, hubs: Iterable[HubUse], daily: Sequence[int | float], today: dt.date,
                   thresholds: Thresholds = Thresholds(), fleet_hub_size: int | None = None) -> RegionProjection:
    hubs = list(hubs)
    accepting = [h for h in hubs if h.accepting]
    devices = sum(h.devices for h in accepting)
    limit = sum(max(0, h.max_devices) for h in accepting)
    growth = growth_per_day(daily)
    days = days_to_full(devices, limit, growth)
    sizes = [h.max_devices for h in hubs if h.max_devices > 0]
    hub_size = max(sizes) if sizes else fleet_hub_size
    full_on = today + dt.timedelta(days=math.floor(days)) if days is not None else None
    return RegionProjection(
        region=region, hubs=len(hubs), accepting_hubs=len(accepting), devices=devices, limit=limit,
        devices_not_accepting=sum(h.devices for h in hubs if not h.accepting), growth_per_day=growth,
        days_to_full=days, full_on=full_on, status=status_of(devices, limit, days, thresholds),
        hubs_to_add=hubs_to_add(devices, limit, growth, hub_size, thresholds), hub_size=hub_size,
        window_days=len(daily))


def _total(regions: list[RegionProjection], today: dt.date, window_days: int) -> RegionProjection:
    devices, limit = sum(r.devices for r in regions), sum(r.limit for r in regions)
    growth = sum(r.growth_per_day for r in regions)
    days = days_to_full(devices, limit, growth) if regions else None
    adds = [r.hubs_to_add for r in regions]
    return RegionProjection(
        region="total", hubs=sum(r.hubs for r in regions), accepting_hubs=sum(r.accepting_hubs for r in regions),
        devices=devices, limit=limit, devices_not_accepting=sum(r.devices_not_accepting for r in regions),
        growth_per_day=growth, days_to_full=days,
        full_on=today + dt.timedelta(days=math.floor(days)) if days is not None else None,
        status=max((r.status for r in regions), key=RANK.__getitem__, default=OK),
        hubs_to_add=None if any(a is None for a in adds) else sum(adds), hub_size=None, window_days=window_days)


def project(hubs: Iterable[HubUse], daily_by_region: Mapping[str, Sequence[int | float]], today: dt.date,
            thresholds: Thresholds = Thresholds(), window_days: int = 14, notes: Iterable[str] = ()) -> CapacityReport:
    """The report: one projection per region that has a hub or allocations in the window, and their total.

    daily_by_region: per region, the allocations of each day of the window (missing days: pad with 0 up to
    window_days, so a region with one busy day is not read as growing that fast every day)."""
    hubs = list(hubs)
    by_region: dict[str, list[HubUse]] = {}
    for hub in hubs:
        by_region.setdefault(hub.region, []).append(hub)
    for region in daily_by_region:
        by_region.setdefault(region, [])
    sizes = [h.max_devices for h in hubs if h.max_devices > 0]
    fleet_size = max(sizes) if sizes else None
    regions = []
    for region in sorted(by_region):
        daily = list(daily_by_region.get(region, ()))
        daily += [0] * max(0, window_days - len(daily))
        regions.append(project_region(region, by_region[region], daily, today, thresholds, fleet_size))
    return CapacityReport(today, thresholds, regions, _total(regions, today, window_days), list(notes))


# -- the alert (queued on the alerts queue, e-mailed to the operations address) -------------------------------------

def alert_message(report: CapacityReport, to: Iterable[str]) -> dict | None:
    """The alert for the regions at warn or full, or None when every region is ok."""
    regions = report.alerting
    if not regions:
        return None
    date = report.date.isoformat()
    return {"type": "hubCapacityAlert", "id": f"{date}:capacity", "date": date, "to": list(to),
            "level": max((r.status for r in regions), key=RANK.__getitem__),
            "regions": [r.to_dict() for r in regions], "hubsToAdd": sum(r.hubs_to_add or 0 for r in regions),
            "thresholds": report.to_dict()["thresholds"]}


def _when(value: float | None) -> str:
    if value is None:
        return "not projected to fill (no growth)"
    return "full now" if value <= 0 else f"full in {value:.0f} days"


def region_line(r: dict) -> str:
    used = "no accepting hub" if not r["limit"] else f"{r['devices']}/{r['limit']} ({r['utilisation']:.0%})"
    add = "?" if r["hubsToAdd"] is None else str(r["hubsToAdd"])
    return (f"{r['region']}: {r['status']}, {used}, {r['growthPerDay']:g}/day, {_when(r['daysToFull'])}"
            f"{' (' + r['fullOn'] + ')' if r['fullOn'] and r['daysToFull'] else ''}; add {add} hub(s)"
            f"{' of ' + str(r['hubSize']) + ' devices' if r['hubSize'] and r['hubsToAdd'] else ''}")


def email_content(message: dict) -> dict:
    regions = message["regions"]
    names = ", ".join(f"{r['region']} {r['status']}" for r in regions)
    subject = f"[{message['level'].upper()}] IoT hub capacity: {names}; add {message['hubsToAdd']} hub(s)"
    t = message["thresholds"]
    lines = [f"IoT hub capacity on {message['date']}: {len(regions)} region(s) at or past the thresholds "
             f"({t['warnUtilisation']:.0%} of the limit, or full within {t['warnDays']:g} days).", ""]
    lines += [f"- {region_line(r)}" for r in regions]
    lines += ["", f"Recommended hubs keep {t['headroomDays']:g} days of growth at the current rate below "
                  f"{t['warnUtilisation']:.0%}. Adding a hub: README, 'Capacity'."]
    return {"subject": subject, "plainText": "\n".join(lines)}
