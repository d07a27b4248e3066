"""IoT Hub adapter for twin setup: read a twin, PATCH it with If-Match, apply an edge deployment.

Uses the cached IoTHubRegistryManager of each hub (shared.bootstrap) and calls its protocol layer directly, for
two things the convenience methods do not offer: a per-call timeout and the raw JSON of the twin (so the pure
planning code sees plain dicts, including `capabilities.iotEdge`, which GET /twins returns). Errors are
translated into the few outcomes the service distinguishes:
- 404 DeviceNotFound -> DeviceGone (deleted before or while we worked: nothing may resurrect it);
- 412 -> PreconditionFailed (someone wrote the twin since we read it: re-read and plan again);
- 429, 408, 5xx, timeouts, connection errors -> retry.TransientError with Retry-After when the hub sent one;
- 401 / 403 other than a size refusal -> HubAccessDenied (misconfigured credentials or rights: fail the
  invocation so Event Grid redelivers once it is fixed; never recorded against the device);
- other 4xx (400 ArgumentInvalid, 403 DeviceModelMaxPropertiesExceeded, InvalidConfigurationContent) ->
  HubRefused, a permanent refusal of this particular request.
The azure-iot-hub SDK is imported lazily, so importing twin_setup does not pay for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twin_setup.retry import TransientError, parse_retry_after

log = logging.getLogger(__name__)
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class DeviceGone(Exception):
    """The device does not exist on the hub (any more)."""


class PreconditionFailed(Exception):
    """The twin's etag changed since it was read."""


class HubAccessDenied(Exception):
    """The hub refused our credentials or rights (401/403)."""


class HubRefused(Exception):
    """A permanent refusal of one request (4xx other than 404/408/412/429)."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message


class UnknownHub(Exception):
    """An event names a hub that is not configured."""


@dataclass
class HubCallStats:
    """Counts and time spent in IoT Hub calls (the benchmark subtracts it to get handler overhead)."""

    calls: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, operation: str, seconds: float) -> None:
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            self.seconds += seconds


def _error_code(response) -> str:
    code = response.headers.get("iothub-errorcode") if response is not None else None
    if code:
        return code
    try:
        message = response.json().get("Message", "")
    except Exception:  # noqa: BLE001 - an error body that is not JSON still has a status
        return ""
    return message.split(";", 1)[0].removeprefix("ErrorCode:") if message.startswith("ErrorCode:") else ""


def _message(response) -> str:
    try:
        body = response.json()
    except Exception:  # noqa: BLE001
        return (response.text or "")[:200]
    message = body.get("Message", "") if isinstance(body, dict) else ""
    return message.split(";", 1)[-1][:200]


def translate(exc: Exception, what: str) -> Exception:
    """The exception the service sees for an SDK exception (returned, for the caller to raise)."""
    from msrest.exceptions import AuthenticationError, ClientRequestError, HttpOperationError

    if isinstance(exc, HttpOperationError):
        response = exc.response
        status = response.status_code if response is not None else 0
        code = _error_code(response)
        if status == 404:
            return DeviceGone(f"{what}: {code or 'not found'}")
        if status == 412:
            return PreconditionFailed(what)
        if status in TRANSIENT_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
            return TransientError(f"{what}: HTTP {status} {code}".strip(), retry_after)
        if status in (401, 403) and code != "DeviceModelMaxPropertiesExceeded":
            return HubAccessDenied(f"{what}: HTTP {status} {code}".strip())
        return HubRefused(status, code, _message(response))
    if isinstance(exc, AuthenticationError):
        return HubAccessDenied(f"{what}: {type(exc).__name__}")
    if isinstance(exc, ClientRequestError):  # timeouts, refused connections, urllib3 retries exhausted
        return TransientError(f"{what}: {type(exc).__name__} ({str(exc)[:120]})")
    return exc


def _quoted(etag: str | None) -> str | None:
    if etag is None or (len(etag) > 1 and etag[0] == etag[-1] == '"'):
        return etag
    return f'"{etag}"'


class HubResolver:
    """Event Grid names a hub by its name ("contoso-west"); calls need its host name. Resolution order: the
    explicit IOT_HUB_NAMES mapping, then the configured host whose first DNS label is the name
    (contoso-west.azure-devices.net)."""

    def __init__(self, hosts: tuple[str, ...], explicit: tuple[tuple[str, str], ...] = ()):
        self._hosts = hosts
        self._explicit = {name.lower(): host for name, host in explicit}

    def resolve(self, hub_name: str) -> str:
        host = self._explicit.get(hub_name.lower())
        if host is None:
            host = next((h for h in self._hosts if h.split(".", 1)[0].lower() == hub_name.lower()), None)
        if host is None:
            raise UnknownHub(f"hub {hub_name[:80]!r} is not configured (IOT_HUB_NAMES / IOT_HUB_HOSTNAMES)")
        return host


def tuned(manager: Any) -> Any:
    """Two changes to an IoTHubRegistryManager's msrest client, for twin setup's own use:
    - keep-alive: msrest closes its session after every call unless config.keep_alive is set, so each call
      paid a new TCP + TLS handshake (about 20 ms of the 22 ms a twin read takes against the local emulator);
    - no status retries in urllib3: msrest has it retry GETs on 5xx and sleep out any Retry-After on 429/503,
      however long; a 60 s Retry-After would hold the invocation past Event Grid's 30 s delivery timeout,
      outside the event's budget. 429/5xx are left to RetryBudget; connection retries stay with urllib3."""
    from urllib3 import Retry

    retry = Retry(total=3, connect=3, read=0, status=0, other=0, backoff_factor=0.2, status_forcelist=(),
                  respect_retry_after_header=False, raise_on_status=False)
    retry.backoff_max = 2  # urllib3 2.x
    retry.BACKOFF_MAX = 2  # urllib3 1.x name, which msrest also logs when it builds a session
    manager.protocol.config.retry_policy.policy = retry
    manager.protocol.config.keep_alive = True
    return manager


class RegistryClients:
    """Twin setup's own IoTHubRegistryManager per hub, created once per process; not the composition root's,
    because it is configured differently (see tuned)."""

    def __init__(self, factory: Callable[[str], Any]):
        self._factory = factory
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> Any:
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = self._clients[host] = tuned(self._factory(host))
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.protocol.close()
            self._clients.clear()


class HubGateway:
    def __init__(self, registry_for: Callable[[str], Any], timeout_s: float,
                 clock: Callable[[], float] = time.perf_counter):
        self._registry_for = registry_for
        self._timeout = timeout_s
        self._clock = clock
        self.stats = HubCallStats()

    def close(self) -> None:
        close = getattr(self._registry_for, "close", None)
        if close is not None:
            close()

    def _call(self, operation: str, host: str, device_id: str, run: Callable[[Any], Any]) -> Any:
        protocol = self._registry_for(host).protocol
        started = self._clock()
        try:
            return run(protocol)
        except Exception as exc:
            translated = translate(exc, f"{operation} {device_id} on {host}")
            if translated is exc:
                raise
            raise translated from exc
        finally:
            self.stats.add(operation, self._clock() - started)

    def get_twin(self, host: str, device_id: str) -> dict[str, Any] | None:
        """The twin's JSON, or None when the device does not exist."""
        try:
            raw = self._call("getTwin", host, device_id,
                             lambda p: p.devices.get_twin(device_id, raw=True, timeout=self._timeout))
        except DeviceGone:
            return None
        return raw.response.json()

    def update_twin(self, host: str, device_id: str, patch: dict[str, Any], etag: str | None) -> dict[str, Any]:
        from azure.iot.hub.models import Twin, TwinProperties

        desired = (patch.get("properties") or {}).get("desired")
        body = Twin(tags=patch.get("tags"), properties=TwinProperties(desired=desired) if desired else None)
        raw = self._call("updateTwin", host, device_id,
                         lambda p: p.devices.update_twin(device_id, body, if_match=_quoted(etag), raw=True,
                                                         timeout=self._timeout))
        return raw.response.json()

    def apply_edge(self, host: str, device_id: str, modules_content: dict[str, Any]) -> None:
        from azure.iot.hub.models import ConfigurationContent

        content = ConfigurationContent(modules_content=modules_content)
        self._call("applyConfigurationContent", host, device_id,
                   lambda p: p.configuration.apply_on_edge_device(device_id, content, timeout=self._timeout))
