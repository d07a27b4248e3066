"""IoT Hub for the certificate lifecycle: twin queries (paged, counted), twin reads and conditional updates,
and disabling a device identity. One adapter over the shared registry managers (azure-iot-hub).

Transient answers (429 throttled, 5xx, connection errors) are retried with backoff that honours Retry-After,
within a per-call budget, then raised as HubUnavailable so the platform retries (timer next run, queue
redelivery). 404 is "gone" (None), 412 is HubConflict (the caller re-reads). Every query page is counted per
hub, which is how the scan reports (and tests check) the number of queries it used.

azure-iot-hub turns projected query results into Twin objects and loses the projected fields, so queries are
`SELECT * ... WHERE ...`: the filtering happens in the hub, the projection here.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from cert_lifecycle.expiry import DeviceTwin

log = logging.getLogger(__name__)
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class HubUnavailable(Exception):
    """The hub did not answer usefully within the retry budget (throttled, down, timed out)."""


class HubConflict(Exception):
    """412: the twin changed since it was read."""


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = (getattr(response, "headers", None) or {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def to_device_twin(host: str, twin: Any) -> DeviceTwin:
    properties = getattr(twin, "properties", None)
    return DeviceTwin(
        device_id=twin.device_id, hub=host, etag=getattr(twin, "etag", None), tags=dict(twin.tags or {}),
        reported=dict(getattr(properties, "reported", None) or {}),
        desired=dict(getattr(properties, "desired", None) or {}))


class HubGateway:
    def __init__(self, registry_for: Callable[[str], Any], attempts: int = 5, budget_s: float = 60,
                 sleep: Callable[[float], None] = time.sleep):
        self._registry_for = registry_for
        self._attempts = attempts
        self._budget_s = budget_s
        self._sleep = sleep
        self.queries: Counter[str] = Counter()

    def _call(self, host: str, what: str, operation: Callable[[], Any]) -> Any:
        from msrest.exceptions import ClientRequestError, HttpOperationError

        deadline = time.monotonic() + self._budget_s
        for attempt in range(1, self._attempts + 1):
            try:
                return operation()
            except HttpOperationError as exc:
                status = _status(exc)
                if status not in TRANSIENT_STATUS:
                    raise
                wait = _retry_after(exc) or min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                reason = f"{what} on {host}: HTTP {status}"
            except ClientRequestError as exc:
                wait, reason = min(8.0, 0.5 * 2 ** (attempt - 1)), f"{what} on {host}: {type(exc).__name__}"
            if attempt == self._attempts or time.monotonic() + wait > deadline:
                raise HubUnavailable(reason)
            log.info("%s; retrying in %.1fs (attempt %d)", reason, wait, attempt)
            self._sleep(wait)
        raise HubUnavailable(f"{what} on {host}")  # pragma: no cover - the loop returns or raises

    def query(self, host: str, text: str, page_size: int = 1000, max_pages: int | None = None) -> Iterator[DeviceTwin]:
        """Every twin matching `SELECT * FROM devices WHERE ...`, page by page (each page is one query)."""
        from azure.iot.hub.models import QuerySpecification

        registry = self._registry_for(host)
        spec = QuerySpecification(query=text)
        token, pages = None, 0
        while True:
            self.queries[host] += 1
            result = self._call(host, "query", lambda t=token: registry.query_iot_hub(spec, t, page_size))
            pages += 1
            for twin in result.items or []:
                yield to_device_twin(host, twin)
            token = result.continuation_token
            if not token or (max_pages is not None and pages >= max_pages):
                return

    def get_twin(self, host: str, device_id: str) -> DeviceTwin | None:
        from msrest.exceptions import HttpOperationError

        try:
            twin = self._call(host, "get twin", lambda: self._registry_for(host).get_twin(device_id))
        except HttpOperationError as exc:
            if _status(exc) == 404:
                return None
            raise
        return to_device_twin(host, twin)

    def update_twin(self, host: str, device_id: str, *, tags: dict | None = None, desired: dict | None = None,
                    etag: str | None = None) -> DeviceTwin:
        """Merge-patch tags and desired properties, conditional on etag when given."""
        from azure.iot.hub.models import Twin, TwinProperties
        from msrest.exceptions import HttpOperationError

        patch = Twin(tags=tags, properties=TwinProperties(desired=desired) if desired is not None else None)
        try:
            twin = self._call(host, "update twin",
                              lambda: self._registry_for(host).update_twin(device_id, patch, etag or "*"))
        except HttpOperationError as exc:
            if _status(exc) == 412:
                raise HubConflict(f"twin of {device_id} changed") from None
            raise
        return to_device_twin(host, twin)

    def disable_device(self, host: str, device_id: str, reason: str) -> bool:
        """Set the device identity to disabled (keeping everything else); False when it is not on this hub."""
        from msrest.exceptions import HttpOperationError

        registry = self._registry_for(host)
        for _ in range(3):
            try:
                device = self._call(host, "get device", lambda: registry.get_device(device_id))
            except HttpOperationError as exc:
                if _status(exc) == 404:
                    return False
                raise
            if device.status == "disabled":
                return True
            device.status = "disabled"
            device.status_reason = reason[:128]
            try:
                self._call(host, "disable device", lambda d=device: registry.protocol.devices.create_or_update_identity(
                    id=device_id, device=d, if_match=f'"{d.etag}"'))
                return True
            except HttpOperationError as exc:
                if _status(exc) != 412:
                    raise
        raise HubConflict(f"device {device_id} kept changing")
