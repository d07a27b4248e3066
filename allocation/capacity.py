"""Hub load: limits from the iot_hubs table; device counts kept in SQL for every webhook instance at once.

Functions scales out and runs several worker processes per instance, so a count held in one process's memory
misses what the others send. Every instance shares one row per hub in `hub_allocations`:

- `allocations`: places taken, ever. A decision takes its place with one conditional UPDATE that succeeds only
  while the hub's estimated count is below its limit, so two instances cannot both take the last place.
- an anchor (`anchor_devices`, `anchor_allocations`): the hub's registry device count at some moment and the
  counter at that moment. Estimated count = anchor_devices + (allocations - anchor_allocations).

The anchor is moved to fresh registry statistics (read every CAPACITY_CACHE_TTL_SECONDS, to spare the hubs'
registry throttle) only when the counter has not moved for QUIET_S seconds: then no allocated device can still
be on its way to the registry (DPS creates it within a second or two of the webhook's answer), and the
statistics count every device exactly. Anchoring during a burst would miss the devices in flight and let the
hub overfill. Between quiet moments, deleted devices still count (a hub looks fuller than it is, never emptier).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from allocation.policy import HubLoad
from shared.cache import TtlCache
from shared.errors import OnboardingError
from shared.sql import Database

log = logging.getLogger(__name__)

QUIET_S = 10.0

_ESTIMATE = "anchor_devices + allocations - anchor_allocations"


@dataclasses.dataclass(frozen=True)
class _Counter:
    allocations: int
    anchor_devices: int | None
    anchor_allocations: int | None

    @property
    def estimate(self) -> int | None:
        if self.anchor_devices is None or self.anchor_allocations is None:
            return None
        return self.anchor_devices + self.allocations - self.anchor_allocations


class CapacityMonitor:
    def __init__(self, database: Database, device_count: Callable[[str], int], configured_hubs: list[str],
                 ttl_s: float, clock: Callable[[], float] = time.monotonic, quiet_s: float = QUIET_S,
                 wait_s: float | None = None):
        """wait_s: how long a request waits for a first load (the webhook's deadline); later loads never hold a
        request: the hubs held are served while one refresh is in flight (shared.cache stale mode, for one more
        TTL: the limits and accepting flags held; counts come from SQL at every request, see snapshot)."""
        self._db = database
        self._device_count = device_count
        self._configured = set(configured_hubs)
        self._ttl_s = ttl_s
        self._cache: TtlCache[dict[str, HubLoad]] = TtlCache(ttl_s, error_ttl_s=min(5.0, ttl_s), clock=clock,
                                                            stale_s=ttl_s, wait_s=wait_s)
        self._clock = clock
        self._quiet_s = quiet_s
        self._seen: dict[str, tuple[int, float]] = {}  # per hub: the counter as last seen, and since when
        self._counted: dict[str, tuple[int, float]] = {}  # per hub: the last statistics read, and when
        self.unavailable: frozenset[str] = frozenset()  # hubs left out of the last load: statistics unknown

    def _count(self, host_name: str) -> int | None:
        try:
            count = self._device_count(host_name)
        except Exception as exc:  # noqa: BLE001 - one silent hub must not block the others
            log.warning("capacity: %s statistics unavailable (%s)", host_name, type(exc).__name__)
            return None
        self._counted[host_name] = (count, self._clock())
        return count

    def _last_count(self, host: str, counter: _Counter | None) -> int | None:
        """After a failed statistics read: a count that is still safe to decide on. The SQL estimate when the hub
        is anchored (it counts every place taken since, so it never shows the hub emptier than it is), else the
        last statistics read while it is younger than two cache periods. None: leave the hub out."""
        if counter is not None and counter.estimate is not None:
            return counter.estimate
        last = self._counted.get(host)
        if last is not None and self._clock() - last[1] < 2 * self._ttl_s:
            return last[0]
        return None

    def _counters(self) -> dict[str, _Counter]:
        rows = self._db.fetch_all(
            "SELECT host_name, allocations, anchor_devices, anchor_allocations FROM hub_allocations")
        return {r["host_name"]: _Counter(int(r["allocations"]),
                                         None if r["anchor_devices"] is None else int(r["anchor_devices"]),
                                         None if r["anchor_allocations"] is None else int(r["anchor_allocations"]))
                for r in rows}

    def _ensure_counters(self, hosts: list[str]) -> dict[str, _Counter]:
        counters = self._counters()
        for host in hosts:
            if host not in counters:
                try:
                    self._db.execute("INSERT INTO hub_allocations (host_name, allocations) VALUES (?, 0)", [host])
                except Exception:  # noqa: BLE001 - another instance created the row first
                    log.debug("capacity: counter for %s already created", host)
        return self._counters() if any(h not in counters for h in hosts) else counters

    def _reanchor(self, host: str, before: _Counter, devices: int) -> None:
        """Anchor host at `devices` if nothing has been allocated to it for quiet_s seconds."""
        now = self._clock()
        seen, since = self._seen.get(host, (None, now))
        if seen != before.allocations:
            self._seen[host] = (before.allocations, now)
            since = now
        # quiet_s 0 takes every reading as it comes (tests of the policy against changing statistics).
        quiet = self._quiet_s <= 0 or (seen == before.allocations and now - since >= self._quiet_s)
        if before.estimate is not None and not quiet:
            return
        # Conditional on the counter: an allocation that slipped in since `before` keeps the old anchor.
        self._db.execute("UPDATE hub_allocations SET anchor_devices = ?, anchor_allocations = ? "
                         "WHERE host_name = ? AND allocations = ?",
                         [devices, before.allocations, host, before.allocations])

    def _load(self) -> dict[str, HubLoad]:
        rows = self._db.fetch_all(
            "SELECT host_name, region, max_devices, max_daily_messages, accepting FROM iot_hubs")
        rows = [r for r in rows if r["host_name"] in self._configured]
        before = self._ensure_counters([r["host_name"] for r in rows])
        with ThreadPoolExecutor(max_workers=max(1, len(rows)), thread_name_prefix="capacity") as pool:
            counts = list(pool.map(self._count, [r["host_name"] for r in rows]))
        hubs, unknown = {}, set()
        for r, count in zip(rows, counts, strict=True):
            host = r["host_name"]
            if count is None:  # one failed read does not remove the hub while a safe count is known
                count = self._last_count(host, before.get(host))
                if count is None:
                    unknown.add(host)
                    continue
            else:
                self._reanchor(host, before[host], count)
            hubs[host] = HubLoad(host, r["region"], bool(r["accepting"]), count,
                                 int(r["max_devices"]), None, int(r["max_daily_messages"]))
        self.unavailable = frozenset(unknown)
        if rows and not hubs:
            # Nothing to decide on, and it may answer later: retryable (503), not no_hub_capacity (409, final).
            raise OnboardingError("dependency_unavailable", f"statistics of every hub unavailable "
                                                            f"({', '.join(sorted(unknown))})")
        return hubs

    def _hubs(self) -> dict[str, HubLoad]:
        try:
            return self._cache.get("hubs", self._load)
        except OnboardingError:
            raise
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"hub capacity unknown ({type(exc).__name__})") from exc

    def reserve(self, host_name: str) -> bool:
        """Take a place on host_name for a new device; False when its limit leaves none."""
        hub = self._hubs().get(host_name)
        if hub is None:
            return False
        try:
            taken = self._db.execute(
                f"UPDATE hub_allocations SET allocations = allocations + 1 "  # noqa: S608 - fixed expression
                f"WHERE host_name = ? AND {_ESTIMATE} < ?", [host_name, hub.max_devices])
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"hub capacity unknown ({type(exc).__name__})") from exc
        return taken == 1

    def snapshot(self) -> dict[str, HubLoad]:
        hubs = self._hubs()
        try:
            counters = self._counters()
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"hub capacity unknown ({type(exc).__name__})") from exc
        loads = {}
        for host, hub in hubs.items():
            estimate = counters[host].estimate if host in counters else None
            loads[host] = hub if estimate is None else dataclasses.replace(hub, device_count=estimate)
        return loads
