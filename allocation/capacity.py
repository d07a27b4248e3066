"""Hub load: limits from the iot_hubs table, device counts from each hub's registry statistics, plus the
allocations every instance has made since.

Registry statistics are read once per CAPACITY_CACHE_TTL_SECONDS (hubs in parallel; a hub that does not answer
is left out, so it cannot be chosen, rather than failing the request): reading them per request would spend
the hubs' registry-operation throttle. Between two reads, devices keep arriving, sent by this instance and by
every other one (Functions scales out, and runs several worker processes per instance). Each allocation
therefore takes a place in a per-hub counter in SQL (hub_allocations), and a decision counts the hub's
devices as its statistics plus the counter's growth since they were read. Taking the place is one conditional
UPDATE (only while the counter is below what the hub's limit leaves), so two instances deciding at the same
moment cannot both take the last place. The counter is read before the statistics, so a device created in
between counts twice (a hub looks fuller than it is) rather than not at all.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from allocation.policy import HubLoad
from shared.cache import TtlCache
from shared.errors import OnboardingError
from shared.sql import Database

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Refresh:
    hubs: dict[str, HubLoad]  # device counts as the registry statistics gave them
    allocations: dict[str, int]  # the hub_allocations counters just before those statistics were read


class CapacityMonitor:
    def __init__(self, database: Database, device_count: Callable[[str], int], configured_hubs: list[str],
                 ttl_s: float):
        self._db = database
        self._device_count = device_count
        self._configured = set(configured_hubs)
        self._cache: TtlCache[_Refresh] = TtlCache(ttl_s)

    def _count(self, host_name: str) -> int | None:
        try:
            return self._device_count(host_name)
        except Exception as exc:  # noqa: BLE001 - one silent hub must not block the others
            log.warning("capacity: %s statistics unavailable (%s)", host_name, type(exc).__name__)
            return None

    def _allocations(self) -> dict[str, int]:
        rows = self._db.fetch_all("SELECT host_name, allocations FROM hub_allocations")
        return {r["host_name"]: int(r["allocations"]) for r in rows}

    def _load(self) -> _Refresh:
        rows = self._db.fetch_all(
            "SELECT host_name, region, max_devices, max_daily_messages, accepting FROM iot_hubs")
        rows = [r for r in rows if r["host_name"] in self._configured]
        self._ensure_counters([r["host_name"] for r in rows])
        allocations = self._allocations()  # before the statistics: see the module docstring
        with ThreadPoolExecutor(max_workers=max(1, len(rows)), thread_name_prefix="capacity") as pool:
            counts = list(pool.map(self._count, [r["host_name"] for r in rows]))
        hubs = {
            r["host_name"]: HubLoad(r["host_name"], r["region"], bool(r["accepting"]), count,
                                    int(r["max_devices"]), None, int(r["max_daily_messages"]))
            for r, count in zip(rows, counts, strict=True)
            if count is not None
        }
        return _Refresh(hubs, allocations)

    def _ensure_counters(self, hosts: list[str]) -> None:
        known = self._allocations()
        for host in hosts:
            if host not in known:
                try:
                    self._db.execute("INSERT INTO hub_allocations (host_name, allocations) VALUES (?, 0)", [host])
                except Exception:  # noqa: BLE001 - another instance created the row first
                    log.debug("capacity: counter for %s already created", host)

    def reserve(self, host_name: str) -> bool:
        """Take a place on host_name for a new device; False when its limit leaves none (as seen now)."""
        refresh = self._cache.get("hubs", self._load)
        hub = refresh.hubs.get(host_name)
        if hub is None:
            return False
        bound = refresh.allocations.get(host_name, 0) + hub.max_devices - hub.device_count
        try:
            taken = self._db.execute(
                "UPDATE hub_allocations SET allocations = allocations + 1 WHERE host_name = ? AND allocations < ?",
                [host_name, bound])
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"hub capacity unknown ({type(exc).__name__})") from exc
        return taken == 1

    def snapshot(self) -> dict[str, HubLoad]:
        try:
            refresh = self._cache.get("hubs", self._load)
            now = self._allocations()
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"hub capacity unknown ({type(exc).__name__})") from exc
        return {
            host: dataclasses.replace(
                hub, device_count=hub.device_count + max(0, now.get(host, 0) - refresh.allocations.get(host, 0)))
            for host, hub in refresh.hubs.items()
        }
