"""create_app(config): one emulated IoT hub as an ASGI app (serve it over TLS with local.serve)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from local.faults import FaultEngine, engine_from_environment, install
from local.iothub.config import HubConfig
from local.iothub.edge import EdgeService
from local.iothub.errors import HubError
from local.iothub.events import DeliveryPolicy, EventPublisher
from local.iothub.http import error_response
from local.iothub.ratelimit import RateLimiter
from local.iothub.routes import ROUTES
from local.iothub.service import HubService
from local.iothub.store import HubStore

log = logging.getLogger("local.iothub")


class TwinSignals:
    """Wakes the device-side long polls waiting on a twin when the back end changes it (no re-reading on a
    timer). Twin writes and long polls both run on the hub's event loop, so no lock is needed."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def changed(self, device_id: str) -> None:
        for event in self._waiters.get(device_id, ()):
            event.set()

    @contextlib.contextmanager
    def waiter(self, device_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        waiters = self._waiters.setdefault(device_id, set())
        waiters.add(event)
        try:
            yield event
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(device_id, None)


@dataclass
class Hub:
    """Everything a request handler needs; reachable as app.state.hub (tests use it too)."""

    config: HubConfig
    store: HubStore
    events: EventPublisher
    service: HubService
    edge: EdgeService
    limiter: RateLimiter
    signals: TwinSignals


def build_hub(config: HubConfig, delivery: DeliveryPolicy | None = None) -> Hub:
    store = HubStore(config.state_dir)
    events = EventPublisher(config, store, policy=delivery)
    service = HubService(config, store, events)
    signals = TwinSignals()
    service.on_twin_change = signals.changed
    return Hub(config, store, events, service, EdgeService(service), RateLimiter(config.rate_limits), signals)


async def _hub_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HubError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "BadRequest")
    text = f"{request.method} {request.url.path} is not part of the emulated IoT Hub API."
    return error_response(HubError(exc.status_code, code, text))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(HubError(500, "ServerError", "The emulator failed unexpectedly; see its log."))


def create_app(config: HubConfig, delivery: DeliveryPolicy | None = None,
               faults: FaultEngine | None = None) -> Starlette:
    """delivery: Event Grid's retry and dead-letter settings for this hub's events (local/iothub/events.py);
    faults: a fault engine (local/faults.py), by default the one LOCAL_FAULT_PROFILE names, if any."""
    hub = build_hub(config, delivery)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        task = asyncio.create_task(hub.events.run(), name=f"events-{config.name}") if hub.events.enabled else None
        log.info("IoT hub %s on https://%s (%d devices)", config.name, config.host_name, len(hub.store.devices))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            hub.store.devices.flush()  # lastActivityTime and message counters (store.py, volatile fields)

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={HubError: _hub_error, HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.hub = hub
    def events() -> dict:
        delivery = hub.events.policy.faults
        return {"events": {**hub.events.summary(), "faults": delivery.counters() if delivery else {}}}

    return install(app, faults if faults is not None else engine_from_environment("iothub"), events)
