"""Event Grid delivery of device lifecycle events, as IoT Hub's system topic does it.

Events use the Event Grid schema of "Azure IoT Hub as an Event Grid source" (a JSON array of events, data =
{twin, hubName, deviceId}) and go to one webhook with `aeg-event-type: Notification`. As Event Grid does for a
subscription's maxEventsPerBatch (infra sets 10), the events waiting when a delivery starts go out together,
up to that many per POST: one at a time when traffic is light, far fewer requests during a rollout. A batch
succeeds or is retried (or dead-lettered) as a whole, like Event Grid's. Delivery is at
least once: an event is written to the hub's outbox (on disk) before the REST call that caused it answers,
and a background task posts it, retrying with exponential backoff until the subscriber says 2xx or the retry
window (24 h, like Event Grid) ends. A subscriber that is not up yet therefore gets its events later, also
after an emulator restart. Like Event Grid, 400 and 413 answers are not retried but dead-lettered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from local.iothub.config import HubConfig
from local.iothub.store import HubStore, write_json_atomic

log = logging.getLogger("local.iothub.events")
NO_RETRY_STATUSES = {400, 413}
DELIVERY_TIMEOUT_S = 10.0


def event_time(now: dt.datetime | None = None) -> str:
    """IoT Hub's timestamps: UTC with seven fractional digits ("2018-01-02T19:17:44.4383997Z")."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


# The twin fields of the documented DeviceCreated example (plus tags when set). Notably absent:
# capabilities, so a subscriber cannot tell an IoT Edge device from the event and must read the registry.
EVENT_TWIN_FIELDS = (
    "deviceId",
    "etag",
    "deviceEtag",
    "status",
    "statusUpdateTime",
    "connectionState",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "authenticationType",
    "x509Thumbprint",
    "version",
    "tags",
    "properties",
)


def lifecycle_event(config: HubConfig, event_type: str, device_id: str, twin: dict[str, Any]) -> dict[str, Any]:
    twin = {k: twin[k] for k in EVENT_TWIN_FIELDS if k in twin}
    return {
        "id": str(uuid.uuid4()),
        "topic": config.resource_id,
        "subject": f"devices/{device_id}",
        "eventType": event_type,
        "eventTime": event_time(),
        "data": {"twin": twin, "hubName": config.name, "deviceId": device_id},
        "dataVersion": "1",
        "metadataVersion": "1",
    }


CONCURRENT_DELIVERIES = 16


class EventPublisher:
    """Outbox writer (called by request handlers) and delivery loop (a task on the server's event loop)."""

    def __init__(
        self, config: HubConfig, store: HubStore, client_factory: Callable[[], httpx.AsyncClient] | None = None
    ):
        self._config = config
        self._store = store
        self._client_factory = client_factory or (lambda: httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_S))
        self._attempts: dict[str, int] = {}
        self._next_try: dict[str, float] = {}
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._config.event_grid_url)

    def publish(self, event_type: str, device_id: str, twin: dict[str, Any]) -> None:
        """Queue an event durably; returns at once (delivery happens in the background)."""
        if not self.enabled or event_type not in self._config.event_types:
            return
        event = lifecycle_event(self._config, event_type, device_id, twin)
        key = f"{time.time_ns():020d}-{event['id']}"
        with self._store.lock:
            self._store.outbox.put(key, {"event": event, "url": self._config.event_grid_url, "created": time.time()})
        self.wake()

    def wake(self) -> None:
        if self._loop is not None and self._wakeup is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self) -> None:
        """Deliver until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        async with self._client_factory() as client:
            while True:
                # Clear before scanning: an event published while this pass runs sets the flag again, so the
                # wait below returns at once instead of sleeping on a stale flag (a lost wake-up).
                self._wakeup.clear()
                now = time.time()
                due = [key for key in self._store.outbox.keys() if self._next_try.get(key, 0) <= now]
                # Event Grid delivers concurrently and promises no order; so does the emulator.
                size = max(1, self._config.event_max_batch)
                batches = [due[start:start + size] for start in range(0, len(due), size)]
                for start in range(0, len(batches), CONCURRENT_DELIVERIES):
                    await asyncio.gather(*(self._deliver(client, keys)
                                           for keys in batches[start:start + CONCURRENT_DELIVERIES]))
                waits = [t - time.time() for k, t in self._next_try.items() if k in self._store.outbox]
                timeout = max(0.05, min(waits, default=30.0))
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    pass

    async def _deliver(self, client: httpx.AsyncClient, keys: list[str]) -> None:
        # One POST per subscriber URL: the URL can change between emulator runs while events wait.
        by_url: dict[str, dict[str, dict[str, Any]]] = {}
        for key in keys:
            if (entry := self._store.outbox.get(key)) is not None:
                by_url.setdefault(entry["url"], {})[key] = entry
        for url, entries in by_url.items():
            await self._post(client, url, entries)

    async def _post(self, client: httpx.AsyncClient, url: str, entries: dict[str, dict[str, Any]]) -> None:
        events = [entry["event"] for entry in entries.values()]
        headers = {
            "aeg-event-type": "Notification",
            "aeg-subscription-name": "LOCAL-IOTHUB-LIFECYCLE",
            "aeg-delivery-count": str(max(self._attempts.get(key, 0) for key in entries)),
            "aeg-data-version": events[0]["dataVersion"],
            "aeg-metadata-version": events[0]["metadataVersion"],
            "Content-Type": "application/json",
        }
        try:
            response = await client.post(url, content=json.dumps(events), headers=headers)
            status, reason = response.status_code, f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            status, reason = None, f"{type(exc).__name__}: {exc}"
        for key, entry in entries.items():
            self._settle(key, entry, status, reason)

    def _settle(self, key: str, entry: dict[str, Any], status: int | None, reason: str) -> None:
        """After a delivery attempt: forget the event, dead-letter it, or schedule its retry."""
        if status is not None and 200 <= status < 300:
            self._forget(key)
            return
        if status in NO_RETRY_STATUSES:
            self._dead_letter(key, entry, reason)
            return
        if time.time() - entry["created"] > self._config.event_retry_window_s:
            self._dead_letter(key, entry, f"retry window ended; last: {reason}")
            return
        attempt = self._attempts.get(key, 0)
        first, longest = self._config.event_backoff_s
        delay = min(longest, first * 2**attempt) * random.uniform(0.8, 1.2)
        self._attempts[key] = attempt + 1
        self._next_try[key] = time.time() + delay
        event = entry["event"]
        log.warning("%s for %s not delivered (%s); retry in %.1fs", event["eventType"], event["subject"], reason, delay)

    def _forget(self, key: str) -> None:
        with self._store.lock:
            self._store.outbox.delete(key)
        self._attempts.pop(key, None)
        self._next_try.pop(key, None)

    def _dead_letter(self, key: str, entry: dict[str, Any], reason: str) -> None:
        self._store.dead_letters.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._store.dead_letters / f"{key}.json", {**entry, "reason": reason})
        log.error("%s for %s dead-lettered: %s", entry["event"]["eventType"], entry["event"]["subject"], reason)
        self._forget(key)
