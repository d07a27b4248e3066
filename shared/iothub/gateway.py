"""The IoT Hub adapter: every registry and twin call the product makes, through the tuned client of each hub.

It calls the SDK's protocol layer (azure-iot-hub's generated operations) for two things the convenience
methods do not offer: a per-call timeout, and the raw JSON (twins keep `capabilities.iotEdge`, projected query
results keep their fields). Each call runs under the one retry policy (shared/retry.py): within the caller's
budget when it passes one (an Event Grid delivery), else within a budget of its own. Errors come out in one
vocabulary (shared/iothub/errors.py). Contract: docs/contracts.md 3.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shared import usage
from shared.iothub.errors import DeviceGone, PreconditionFailed, translate
from shared.iothub.twin import Twin
from shared.retry import RetryBudget, RetryPolicy

MAX_PAGE_SIZE = 1000  # IoT Hub's largest query page (x-ms-max-item-count)
STATUS_REASON_LIMIT = 128


@dataclass
class HubCallStats:
    """Counts and time spent in IoT Hub calls, per operation (benchmarks subtract it to get handler overhead)."""

    calls: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, operation: str, seconds: float) -> None:
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            self.seconds += seconds


def _quoted(etag: str | None) -> str:
    """If-Match value: the etag in quotes (RFC 7232), or * for an unconditional write."""
    if etag is None:
        return "*"
    return etag if len(etag) > 1 and etag[0] == etag[-1] == '"' else f'"{etag}"'


class IotHub:
    def __init__(self, registry_for: Callable[[str], Any], policy: RetryPolicy, timeout_s: float,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.perf_counter,
                 rng: Callable[[], float] = random.random):
        self._registry_for = registry_for  # host -> tuned IoTHubRegistryManager (shared.iothub.RegistryClients)
        self._policy = policy
        self._timeout = timeout_s
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self.stats = HubCallStats()
        self.queries: Counter[str] = Counter()  # query pages per hub (the scan reports its query cost)

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy of calls made without a budget (a timer run cuts it to its RunBudget)."""
        return self._policy

    @property
    def timeout_s(self) -> float:
        return self._timeout

    def close(self) -> None:
        close = getattr(self._registry_for, "close", None)
        if close is not None:
            close()

    def _call(self, operation: str, host: str, subject: str, run: Callable[[Any], Any],
              budget: RetryBudget | None) -> Any:
        what = f"{operation} {subject} on {host}"

        def once() -> Any:
            protocol = self._registry_for(host).protocol
            usage.count(f"iothub.{operation}")  # a request to the hub (shared/usage.py)
            started = self._clock()
            try:
                return run(protocol)
            except Exception as exc:
                translated = translate(exc, what)
                if translated is exc:
                    raise
                raise translated from exc
            finally:
                self.stats.add(operation, self._clock() - started)

        return (budget or RetryBudget(self._policy, sleep=self._sleep, rng=self._rng)).run(once, what)

    # -- twins ---------------------------------------------------------------------------------------------
    def get_twin(self, host: str, device_id: str, budget: RetryBudget | None = None) -> Twin | None:
        """The twin, or None when the device does not exist."""
        try:
            raw = self._call("getTwin", host, device_id,
                             lambda p: p.devices.get_twin(device_id, raw=True, timeout=self._timeout), budget)
        except DeviceGone:
            return None
        return Twin.from_json(host, raw.response.json())

    def update_twin(self, host: str, device_id: str, patch: dict[str, Any], etag: str | None,
                    budget: RetryBudget | None = None) -> Twin:
        """PATCH tags and/or desired properties (shared.iothub.twin_patch), If-Match etag (None: unconditional).
        Raises PreconditionFailed (412) or DeviceGone (404): a PATCH never creates a device."""
        from azure.iot.hub.models import Twin as SdkTwin
        from azure.iot.hub.models import TwinProperties

        desired = (patch.get("properties") or {}).get("desired")
        body = SdkTwin(tags=patch.get("tags"), properties=TwinProperties(desired=desired) if desired else None)
        raw = self._call("updateTwin", host, device_id,
                         lambda p: p.devices.update_twin(device_id, body, if_match=_quoted(etag), raw=True,
                                                         timeout=self._timeout), budget)
        return Twin.from_json(host, raw.response.json())

    def query(self, host: str, text: str, page_size: int = MAX_PAGE_SIZE, max_pages: int | None = None,
              budget: RetryBudget | None = None) -> Iterator[Twin]:
        """Every twin a `SELECT ... FROM devices WHERE ...` query matches, page by page (each page is one query
        against the hub's query throttle, counted in self.queries)."""
        from azure.iot.hub.models import QuerySpecification

        spec = QuerySpecification(query=text)
        token, pages = None, 0
        while True:
            self.queries[host] += 1
            raw = self._call("query", host, "devices",
                             lambda p, t=token: p.query.get_twins(spec, x_ms_continuation=t,
                                                                   x_ms_max_item_count=str(page_size), raw=True,
                                                                   timeout=self._timeout), budget)
            pages += 1
            for doc in raw.response.json() or []:
                yield Twin.from_json(host, doc)
            token = raw.response.headers.get("x-ms-continuation")
            if not token or (max_pages is not None and pages >= max_pages):
                return

    # -- registry ------------------------------------------------------------------------------------------
    def device_count(self, host: str, budget: RetryBudget | None = None) -> int:
        """totalDeviceCount of GET /statistics/devices."""
        raw = self._call("statistics", host, "devices",
                         lambda p: p.statistics.get_device_statistics(raw=True, timeout=self._timeout), budget)
        return int(raw.response.json().get("totalDeviceCount") or 0)

    def set_device_status(self, host: str, device_id: str, status: str, reason: str,
                          budget: RetryBudget | None = None, conflicts: int = 3) -> bool:
        """Set the identity's status (enabled | disabled), keeping everything else, If-Match its etag; False
        when the device is not on this hub. Raises PreconditionFailed when it kept changing."""
        for _ in range(conflicts):
            try:
                device = self._call("getDevice", host, device_id,
                                    lambda p: p.devices.get_identity(device_id, raw=True, timeout=self._timeout),
                                    budget).output
            except DeviceGone:
                return False
            if device.status == status:
                return True
            device.status, device.status_reason = status, reason[:STATUS_REASON_LIMIT]
            try:
                self._call("updateDevice", host, device_id,
                           lambda p, d=device: p.devices.create_or_update_identity(
                               device_id, d, if_match=_quoted(d.etag), timeout=self._timeout), budget)
                return True
            except PreconditionFailed:
                continue
            except DeviceGone:
                return False
        raise PreconditionFailed(f"device {device_id} on {host} kept changing")

    def apply_edge(self, host: str, device_id: str, modules_content: dict[str, Any],
                   budget: RetryBudget | None = None) -> None:
        """POST /devices/{id}/applyConfigurationContent: an IoT Edge deployment manifest."""
        from azure.iot.hub.models import ConfigurationContent

        content = ConfigurationContent(modules_content=modules_content)
        self._call("applyConfigurationContent", host, device_id,
                   lambda p: p.configuration.apply_on_edge_device(device_id, content, timeout=self._timeout),
                   budget)
