"""Hub load snapshot: limits from the iot_hubs table, device counts from each hub's registry statistics.

One snapshot serves every request for CAPACITY_CACHE_TTL_SECONDS; hubs are asked in parallel, and a hub that
does not answer is left out of the snapshot (it cannot be chosen) rather than failing the whole request.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from allocation.policy import HubLoad
from shared.cache import TtlCache
from shared.errors import OnboardingError
from shared.sql import Database

log = logging.getLogger(__name__)


class CapacityMonitor:
    def __init__(self, database: Database, device_count: Callable[[str], int], configured_hubs: list[str],
                 ttl_s: float):
        self._db = database
        self._device_count = device_count
        self._configured = set(configured_hubs)
        self._cache: TtlCache[dict[str, HubLoad]] = TtlCache(ttl_s)
        self._lock = threading.Lock()

    def _count(self, host_name: str) -> int | None:
        try:
            return self._device_count(host_name)
        except Exception as exc:  # noqa: BLE001 - one silent hub must not block the others
            log.warning("capacity: %s statistics unavailable (%s)", host_name, type(exc).__name__)
            return None

    def _load(self) -> dict[str, HubLoad]:
        rows = self._db.fetch_all(
            "SELECT host_name, region, max_devices, max_daily_messages, accepting FROM iot_hubs")
        rows = [r for r in rows if r["host_name"] in self._configured]
        with ThreadPoolExecutor(max_workers=max(1, len(rows)), thread_name_prefix="capacity") as pool:
            counts = list(pool.map(self._count, [r["host_name"] for r in rows]))
        return {
            r["host_name"]: HubLoad(r["host_name"], r["region"], bool(r["accepting"]), count,
                                    int(r["max_devices"]), None, int(r["max_daily_messages"]))
            for r, count in zip(rows, counts, strict=True)
            if count is not None
        }

    def record_allocation(self, host_name: str) -> None:
        """Count a device just sent to host_name, so a burst between refreshes does not overfill it."""
        with self._lock:
            try:
                hubs = self._cache.get("hubs", self._load)
            except Exception:  # noqa: BLE001 - nothing to update
                return
            if host_name in hubs:
                hub = hubs[host_name]
                hubs[host_name] = dataclasses.replace(hub, device_count=hub.device_count + 1)

    def snapshot(self) -> dict[str, HubLoad]:
        try:
            return self._cache.get("hubs", self._load)
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"hub capacity unknown ({type(exc).__name__})") from exc
