"""Event Grid delivery of device lifecycle events, as IoT Hub's system topic does it.

Events use the Event Grid schema of "Azure IoT Hub as an Event Grid source" (a JSON array of events, data =
{twin, hubName, deviceId}) and go to one webhook with `aeg-event-type: Notification`. As Event Grid does for a
subscription's maxEventsPerBatch (infra sets 10), the events waiting when a delivery starts go out together,
up to that many per POST: one at a time when traffic is light, far fewer requests during a rollout. A batch
succeeds or is retried (or dead-lettered) as a whole, like Event Grid's. Delivery is at
least once: an event is written to the hub's outbox (on disk) before the REST call that caused it answers,
and a background task posts it until the subscriber answers 200-204. A subscriber that is not up yet therefore
gets its events later, also after an emulator restart.

Retries and dead-lettering follow Microsoft Learn "Event Grid message delivery and retry" (azure-docs
articles/event-grid/delivery-and-retry.md; docs/contracts.md 2.2), with every duration multiplied by the
policy's time scale (DeliveryPolicy.time_scale; `--event-time-scale` or LOCAL_EVENT_GRID_TIME_SCALE) so a local
run sees the whole schedule in minutes:
- waits 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, then hourly, each at least the documented minimum for the
  status answered (400/401/403/404: 5 min, 408: 2 min, 503: 30 s, others 10 s), plus a little randomness;
- an event is dead-lettered after the subscription's maxDeliveryAttempts (30) or eventTimeToLiveInMinutes (1440),
  whichever comes first (the values infra/modules/device-events.bicep sets), and at once on 400, 403 or 413
  (the "Azure Resources" endpoint row: infra's endpoint type is AzureFunction);
- the dead-letter blob is written about 5 min after the last attempt (scaled), to the subscription's container
  (infra: `eventgrid-deadletter`, here in Azurite) as `{SUBSCRIPTION NAME IN UPPER CASE}/{YYYY}/{M}/{D}/{H}/{guid}.json`
  (UTC, not zero-padded), a JSON array of the events, each with deadLetterReason, deliveryAttempts,
  lastDeliveryOutcome, lastHttpStatusCode, publishTime and lastDeliveryAttemptTime (the documented dead-letter
  event of the Event Grid schema); a dead-letter location unavailable for 4 h (scaled) drops the event. The emulator
  also keeps its own copy, with the reason in words, under the hub's state directory (dead-letters/).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http
import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from local.faults import FaultEngine
from local.iothub.config import HubConfig
from local.iothub.store import HubStore, write_json_atomic

log = logging.getLogger("local.iothub.events")
DELIVERY_TIMEOUT_S = 10.0
# Microsoft Learn "Event Grid message delivery and retry": the retry schedule (then hourly), the minimum wait per
# status, the statuses that dead-letter at once for an Azure resource endpoint, and success = 200-204 only.
RETRY_SCHEDULE_S = (10, 30, 60, 300, 600, 1800, 3600)
MIN_WAIT_BY_STATUS_S = {400: 300, 401: 300, 403: 300, 404: 300, 408: 120, 413: 10, 503: 30}
MIN_WAIT_S = 10
DEAD_LETTER_AT_ONCE = frozenset({400, 403, 413})
SUCCESS = frozenset({200, 201, 202, 203, 204})
DEAD_LETTER_DELAY_S = 300  # "a five-minute delay between the last attempt ... and the dead-letter location"
DEAD_LETTER_GIVE_UP_S = 4 * 3600  # "If the dead-letter location is unavailable for four hours, the event is dropped"
SUBSCRIPTION_NAME = "device-created-to-on_device_created"  # infra/modules/device-events.bicep's name
DEAD_LETTER_CONTAINER = "eventgrid-deadletter"  # infra/main.bicep deadLetterContainer


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


@dataclass(frozen=True)
class DeadLetterTarget:
    """The subscription's deadLetterDestination: a blob container (Azurite locally) and the subscription's name."""

    connection_string: str
    container: str = DEAD_LETTER_CONTAINER
    subscription: str = SUBSCRIPTION_NAME

    def blob_name(self, when: dt.datetime) -> str:
        """{SUBSCRIPTION}/{YYYY}/{M}/{D}/{H}/{guid}.json: the documented layout ("Set dead-letter location and retry
        policy": the subscription's name upper-cased, the UTC date and hour not zero-padded)."""
        return f"{self.subscription.upper()}/{when.year}/{when.month}/{when.day}/{when.hour}/{uuid.uuid4()}.json"


@dataclass(frozen=True)
class DeliveryPolicy:
    """Event Grid's retry policy for the emulator's one subscription, every duration times `time_scale`."""

    time_scale: float = 1.0
    max_attempts: int = 30  # retryPolicy.maxDeliveryAttempts (infra: 30)
    ttl_s: float = 1440 * 60  # retryPolicy.eventTimeToLiveInMinutes (infra: 1440), already scaled
    longest_s: float | None = None  # a cap on one wait (the older `event_backoff_s` setting of HubConfig)
    dead_letter: DeadLetterTarget | None = None
    faults: FaultEngine | None = None  # the "eventgrid" part of a fault profile: failures of the delivery itself
    jitter: float = 0.1  # "a small randomization": each wait is up to this share longer

    @classmethod
    def scaled(cls, time_scale: float, max_attempts: int = 30, ttl_minutes: float = 1440, **kwargs) -> DeliveryPolicy:
        return cls(time_scale=time_scale, max_attempts=max_attempts, ttl_s=ttl_minutes * 60 * time_scale, **kwargs)

    @classmethod
    def from_config(cls, config: HubConfig) -> DeliveryPolicy:
        """For callers that only set HubConfig.event_backoff_s (first wait, longest wait): the schedule scaled so
        that its first step is that first wait, capped by the longest; the TTL is event_retry_window_s."""
        first, longest = config.event_backoff_s
        return cls(time_scale=first / RETRY_SCHEDULE_S[0], ttl_s=config.event_retry_window_s, longest_s=longest)

    def wait_after(self, attempts: int, status: int | None,
                   rng: Callable[[float, float], float] = random.uniform) -> float:
        """The wait before the next attempt after `attempts` failed ones, the last answered `status` (None: no
        answer: a timeout or a broken connection)."""
        step = RETRY_SCHEDULE_S[min(attempts, len(RETRY_SCHEDULE_S)) - 1] if attempts else 0
        floor = MIN_WAIT_BY_STATUS_S.get(status, MIN_WAIT_S) if status is not None else MIN_WAIT_S
        wait = max(step, floor) * self.time_scale
        if self.longest_s is not None:
            wait = min(wait, self.longest_s)
        return wait * rng(1.0, 1.0 + self.jitter)

    @property
    def dead_letter_delay_s(self) -> float:
        return DEAD_LETTER_DELAY_S * self.time_scale

    @property
    def dead_letter_give_up_s(self) -> float:
        return DEAD_LETTER_GIVE_UP_S * self.time_scale


def _iso(moment: float) -> str:
    return event_time(dt.datetime.fromtimestamp(moment, dt.UTC))


def outcome_of(status: int | None, reason: str) -> str:
    """lastDeliveryOutcome: the HTTP status's name as the documented example writes it ("NotFound"); TimedOut for a
    timeout (a reported value); GenericError for a connection that failed (UNCONFIRMED name)."""
    if status is not None:
        try:
            return http.HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
        except ValueError:
            return f"Http{status}"
    return "TimedOut" if "Timeout" in reason or "TimedOut" in reason else "GenericError"


class EventPublisher:
    """Outbox writer (called by request handlers) and delivery loop (a task on the server's event loop)."""

    def __init__(
        self, config: HubConfig, store: HubStore, client_factory: Callable[[], httpx.AsyncClient] | None = None,
        policy: DeliveryPolicy | None = None,
    ):
        self._config = config
        self._store = store
        self._client_factory = client_factory or (lambda: httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_S))
        self.policy = policy or DeliveryPolicy.from_config(config)
        self._attempts: dict[str, int] = {}
        self._next_try: dict[str, float] = {}
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # What happened to deliveries since the emulator started (GET /_faults "events"; local/chaos.py).
        self.stats: Counter[str] = Counter()

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
        self.stats["published"] += 1
        self.wake()

    def wake(self) -> None:
        if self._loop is not None and self._wakeup is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def pending(self) -> dict[str, int]:
        """Events waiting: for a (re)delivery, and for the dead-letter location."""
        entries = [self._store.outbox.get(key) for key in self._store.outbox.keys()]
        dead = sum(1 for e in entries if e is not None and "deadLetter" in e)
        return {"delivery": sum(1 for e in entries if e is not None) - dead, "deadLetter": dead}

    def summary(self) -> dict[str, Any]:
        return {**dict(self.stats), "pending": self.pending()}

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
                due, letters, waits = [], [], []
                for key in self._store.outbox.keys():
                    entry = self._store.outbox.get(key)
                    if entry is None:
                        continue
                    parked = "deadLetter" in entry
                    when = entry["deadLetter"]["due"] if parked else self._due(key, entry)
                    if when <= now:
                        (letters if parked else due).append(key)
                    else:
                        waits.append(when - now)
                for key in letters:
                    await self._write_dead_letter(key)
                # Event Grid delivers concurrently and promises no order; so does the emulator.
                size = max(1, self._config.event_max_batch)
                batches = [due[start:start + size] for start in range(0, len(due), size)]
                for start in range(0, len(batches), CONCURRENT_DELIVERIES):
                    await asyncio.gather(*(self._deliver(client, keys)
                                           for keys in batches[start:start + CONCURRENT_DELIVERIES]))
                if due or letters:
                    continue  # settling may have made something due at once (a dead letter without delay)
                timeout = max(0.05, min(waits, default=30.0))
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    pass

    def _due(self, key: str, entry: dict[str, Any]) -> float:
        if key not in self._next_try:  # first sight, or after a restart: what the outbox remembers
            self._next_try[key] = entry.get("nextTry", 0.0)
            self._attempts[key] = entry.get("attempts", 0)
        return self._next_try[key]

    async def _deliver(self, client: httpx.AsyncClient, keys: list[str]) -> None:
        # One POST per subscriber URL: the URL can change between emulator runs while events wait.
        by_url: dict[str, dict[str, dict[str, Any]]] = {}
        for key in keys:
            if (entry := self._store.outbox.get(key)) is not None:
                by_url.setdefault(entry["url"], {})[key] = entry
        for url, entries in by_url.items():
            await self._post(client, url, entries)

    async def _injected(self) -> tuple[int | None, str] | None:
        """A failure of this delivery from the fault profile's "eventgrid" part, or None."""
        faults = self.policy.faults
        decision = faults.decide("POST", "/delivery") if faults is not None else None
        if decision is None:
            return None
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if decision.fault is None:
            return None
        if decision.fault == "hang":
            await asyncio.sleep(min(decision.hang_s, DELIVERY_TIMEOUT_S))
            return None, "ReadTimeout (injected)"
        if decision.fault == "reset":
            return None, "ConnectError: connection reset (injected)"
        return int(decision.fault), f"HTTP {decision.fault} (injected)"

    async def _post(self, client: httpx.AsyncClient, url: str, entries: dict[str, dict[str, Any]]) -> None:
        events = [entry["event"] for entry in entries.values()]
        headers = {
            "aeg-event-type": "Notification",
            "aeg-subscription-name": SUBSCRIPTION_NAME.upper(),
            "aeg-delivery-count": str(max(self._attempts.get(key, 0) for key in entries)),
            "aeg-data-version": events[0]["dataVersion"],
            "aeg-metadata-version": events[0]["metadataVersion"],
            "Content-Type": "application/json",
        }
        injected = await self._injected()
        if injected is not None:
            status, reason = injected
        else:
            try:
                response = await client.post(url, content=json.dumps(events), headers=headers)
                status, reason = response.status_code, f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                status, reason = None, f"{type(exc).__name__}: {exc}"
        for key, entry in entries.items():
            self._settle(key, entry, status, reason)

    def _settle(self, key: str, entry: dict[str, Any], status: int | None, reason: str) -> None:
        """After a delivery attempt: forget the event, park it for the dead-letter location, or schedule a retry."""
        now = time.time()
        attempts = self._attempts.get(key, 0) + 1
        if status in SUCCESS:
            self.stats["delivered"] += 1
            if attempts > 1:
                self.stats["deliveredAfterRetry"] += 1
            self._forget(key)
            return
        self.stats["failedAttempts"] += 1
        if status in DEAD_LETTER_AT_ONCE:
            why = f"UndeliverableDueToHttp{outcome_of(status, reason)}"
            self._dead_letter(key, entry, why, attempts, status, reason, now)
            return
        if attempts >= self.policy.max_attempts:
            self._dead_letter(key, entry, "MaxDeliveryAttemptsExceeded", attempts, status, reason, now)
            return
        expires = entry["created"] + self.policy.ttl_s
        if now >= expires:
            self._dead_letter(key, entry, "TimeToLiveExceeded", attempts, status, reason, now)
            return
        delay = self.policy.wait_after(attempts, status)
        self._attempts[key] = attempts
        self._next_try[key] = min(now + delay, expires)  # the last try falls on the time-to-live
        with self._store.lock:
            if self._store.outbox.get(key) is not None:
                self._store.outbox.put(key, {**entry, "attempts": attempts, "nextTry": self._next_try[key],
                                             "lastReason": reason})
        self.stats["retriesScheduled"] += 1
        event = entry["event"]
        log.warning("%s for %s not delivered (%s); attempt %d, retry in %.2fs", event["eventType"],
                    event["subject"], reason, attempts, delay)

    def _forget(self, key: str) -> None:
        with self._store.lock:
            self._store.outbox.delete(key)
        self._attempts.pop(key, None)
        self._next_try.pop(key, None)

    def _dead_letter(self, key: str, entry: dict[str, Any], why: str, attempts: int, status: int | None,
                     reason: str, now: float) -> None:
        """Park the event for the dead-letter location; run() writes it after the documented delay."""
        letter = {"deadLetterReason": why, "deliveryAttempts": attempts,
                  "lastDeliveryOutcome": outcome_of(status, reason), "publishTime": _iso(entry["created"]),
                  "lastDeliveryAttemptTime": _iso(now)}
        if status is not None:
            letter["lastHttpStatusCode"] = status
        due = now + self.policy.dead_letter_delay_s
        with self._store.lock:
            self._store.outbox.put(key, {**entry, "reason": reason,
                                         "deadLetter": {"event": letter, "due": due, "since": due}})
        self._attempts.pop(key, None)
        self._next_try.pop(key, None)
        log.error("%s for %s to be dead-lettered: %s after %d attempt(s) (%s)", entry["event"]["eventType"],
                  entry["event"]["subject"], why, attempts, reason)
        self.wake()

    async def _write_dead_letter(self, key: str) -> None:
        entry = self._store.outbox.get(key)
        if entry is None:
            return
        parked = entry["deadLetter"]
        target = self.policy.dead_letter
        blob = None
        if target is not None:
            try:
                blob = await asyncio.to_thread(_upload, target, [{**entry["event"], **parked["event"]}])
            except Exception as exc:  # noqa: BLE001 - any storage failure: try again later, then drop
                now = time.time()
                if now - parked["since"] >= self.policy.dead_letter_give_up_s:
                    log.error("dead-letter location unavailable too long; event %s dropped (%s)",
                              entry["event"]["id"], exc)
                    self._keep_local(key, entry, None, dropped=True)
                    self.stats["dropped"] += 1
                    return
                retry = max(0.05, MIN_WAIT_S * self.policy.time_scale)
                with self._store.lock:
                    self._store.outbox.put(key, {**entry, "deadLetter": {**parked, "due": now + retry}})
                log.warning("dead-letter write of %s failed (%s); again in %.2fs", entry["event"]["id"], exc, retry)
                return
        self._keep_local(key, entry, blob)
        self.stats["deadLettered"] += 1  # after the outbox forgot it: a reader never sees it counted twice

    def _keep_local(self, key: str, entry: dict[str, Any], blob: str | None, dropped: bool = False) -> None:
        letter = entry["deadLetter"]["event"]
        record = {"event": entry["event"], "url": entry["url"], "created": entry["created"],
                  "reason": entry.get("reason"), **letter, "blob": blob, "dropped": dropped}
        self._store.dead_letters.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._store.dead_letters / f"{key}.json", record)
        log.error("%s for %s dead-lettered%s: %s", entry["event"]["eventType"], entry["event"]["subject"],
                  f" to {blob}" if blob else "", letter["deadLetterReason"])
        self._forget(key)


def _upload(target: DeadLetterTarget, body: list[dict[str, Any]]) -> str:
    """Write one dead-letter blob (a JSON array of events); returns container/name. Blocking: run in a thread."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient, ContentSettings

    service = BlobServiceClient.from_connection_string(target.connection_string, connection_timeout=5,
                                                       read_timeout=10, retry_total=0)
    container = service.get_container_client(target.container)
    try:
        container.create_container()  # infra creates it in Azure; Azurite starts without it
    except ResourceExistsError:
        pass
    name = target.blob_name(dt.datetime.now(dt.UTC))
    container.upload_blob(name, json.dumps(body).encode(), overwrite=False,
                          content_settings=ContentSettings(content_type="application/json"))
    return f"{target.container}/{name}"
