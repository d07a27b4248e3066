"""The REST surface: IoT Hub service API paths (those azure-iot-hub's protocol layer calls), IoT Hub's HTTPS
device API for device-to-cloud messages, and emulator-only routes.

Device side (each authenticates the device itself, by the credential its registry identity names: the client
certificate presented in the TLS handshake for X.509 identities, a device-scoped SAS token for `sas` ones;
device_auth.py. A service credential is refused, as are unknown and disabled devices: 401
IotHubUnauthorizedAccess. A successful call moves the device's lastActivityTime.):
- `POST /devices/{id}/messages/events?api-version=2020-03-13`: IoT Hub's documented HTTPS device-to-cloud send
  (REST "Device - Send Device Event", https://learn.microsoft.com/rest/api/iothub/device/send-device-event):
  any body up to 256 KB (413 MessageTooLarge above: "IoT Hub quotas and throttling", message size), optional
  `iothub-app-*` headers as application properties, answered 204; throttled as S1 device-to-cloud sends. The
  emulator routes the message nowhere: it counts it per device (count, bytes, first and last time).
- Emulator-only, since devices read and write their twins over MQTT or AMQP only and the emulator speaks
  neither: `GET /devices/{id}/twin?api-version=...[&desiredVersionAbove=N&timeoutSeconds=S]`, the twin as the
  device sees it ({"desired", "reported"} with $metadata/$version); with desiredVersionAbove it waits (long
  poll, up to 60 s) until desired.$version exceeds N, which is how a simulated sensor waits for its
  configuration. `PATCH /devices/{id}/twin/properties/reported?api-version=...`: merge-patch of reported
  properties (null deletes), as the MQTT `$iothub/twin/PATCH/properties/reported/` topic does.

Service side, emulator-only (no IoT Hub equivalent: real messages go to Event Hubs-compatible endpoints):
`GET /devices/{id}/messages/stats` (that device's counters) and `GET /statistics/messages` (the hub's), with
a service credential (RegistryRead or ServiceConnect), not throttled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from local.iothub import auth as au
from local.iothub import ratelimit as rl
from local.iothub.device_auth import authenticate_device, client_certificate
from local.iothub.errors import HubError, throttled, unauthorized
from local.iothub.http import (
    int_param,
    json_response,
    page_size,
    read_json,
    read_object,
    require_api_version,
)
from shared import usage

Handler = Callable[[Request, Any], Awaitable[Response]]
MAX_LONG_POLL_S = 60
MAX_D2C_BYTES = 256 * 1024  # "IoT Hub quotas and throttling": device-to-cloud message size, up to 256 KB
APP_PROPERTY_PREFIX = "iothub-app-"


def endpoint(operation: str | None, rights: set[str]) -> Callable[[Handler], Callable]:
    """Wrap a service-side handler with IoT Hub's checks, in its order: api-version, authentication, rights,
    throttle (none when operation is None)."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            hub = request.app.state.hub
            require_api_version(request)
            try:
                principal = au.authenticate(
                    request.headers.get("authorization"),
                    hub.config.host_name,
                    hub.config.policies,
                    hub.config.identity_signing_key,
                )
            except au.AuthError as exc:
                raise unauthorized(str(exc)) from exc
            if not (principal.rights & rights):
                raise unauthorized(f"{principal.kind} '{principal.name}' lacks {' or '.join(sorted(rights))}")
            if operation is not None:
                usage.count(f"hub.{operation}")  # what reached this hub, by throttle class (shared/usage.py)
                wait = hub.limiter.check(operation)
                if wait is not None:
                    raise throttled(rl.OPERATION_NAMES[operation], wait)
            return await handler(request, hub)

        return run

    return wrap


def device_endpoint(operation: str) -> Callable[[Handler], Callable]:
    """Wrap a device-side handler: api-version, the device's own authentication (device_auth.py), throttle;
    a call that succeeds moves the device's lastActivityTime."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            hub = request.app.state.hub
            require_api_version(request)
            device_id = _id(request)
            try:
                authenticate_device(device_id, hub.store.devices.peek(device_id), client_certificate(request.scope),
                                    request.headers.get("authorization"), hub.config.host_name)
            except au.AuthError as exc:
                raise unauthorized(str(exc)) from exc
            usage.count(f"hub.{operation}")
            wait = hub.limiter.check(operation)
            if wait is not None:
                raise throttled(rl.OPERATION_NAMES[operation], wait)
            response = await handler(request, hub)
            hub.service.touch_activity(device_id)
            return response

        return run

    return wrap


READ, WRITE, SERVICE = au.REGISTRY_READ, au.REGISTRY_WRITE, au.SERVICE_CONNECT


def _id(request: Request) -> str:
    return request.path_params["id"]


# -- identity registry ------------------------------------------------------------------------------------
@endpoint(rl.REGISTRY, {READ})
async def list_devices(request: Request, hub) -> Response:
    return json_response(hub.service.list_devices(int_param(request.query_params.get("top"), "top")))


@endpoint(rl.REGISTRY, {READ})
async def get_device(request: Request, hub) -> Response:
    device = hub.service.get_device(_id(request))
    return json_response(device, etag=device["etag"])


@endpoint(rl.REGISTRY, {WRITE})
async def put_device(request: Request, hub) -> Response:
    body = await read_object(request, hub.config.max_body_bytes, "a device identity")
    device = hub.service.put_device(_id(request), body, request.headers.get("if-match"))
    return json_response(device, etag=device["etag"])


@endpoint(rl.REGISTRY, {WRITE})
async def bulk_devices(request: Request, hub) -> Response:
    body = await read_json(request, hub.config.max_body_bytes)
    status, result = hub.service.bulk_update(body)
    return json_response(result, status=status)


@endpoint(rl.REGISTRY, {WRITE})
async def delete_device(request: Request, hub) -> Response:
    hub.service.delete_device(_id(request), request.headers.get("if-match"))
    return Response(status_code=204)


@endpoint(rl.REGISTRY, {READ})
async def device_statistics(request: Request, hub) -> Response:
    return json_response(hub.service.device_statistics())


@endpoint(rl.REGISTRY, {READ, SERVICE})
async def service_statistics(request: Request, hub) -> Response:
    return json_response(hub.service.service_statistics())


# -- twins ------------------------------------------------------------------------------------------------
@endpoint(rl.TWIN_READ, {READ, SERVICE})
async def get_twin(request: Request, hub) -> Response:
    twin = hub.service.get_twin(_id(request))
    return json_response(twin, etag=twin["etag"])


async def _update_twin(request: Request, hub, replace: bool) -> Response:
    body = await read_object(request, hub.config.max_body_bytes, "a twin")
    twin = hub.service.update_twin(_id(request), body, request.headers.get("if-match"), replace)
    return json_response(twin, etag=twin["etag"])


@endpoint(rl.TWIN_UPDATE, {WRITE, SERVICE})
async def patch_twin(request: Request, hub) -> Response:
    return await _update_twin(request, hub, replace=False)


@endpoint(rl.TWIN_UPDATE, {WRITE, SERVICE})
async def replace_twin(request: Request, hub) -> Response:
    return await _update_twin(request, hub, replace=True)


@endpoint(rl.QUERY, {READ, SERVICE})
async def query_devices(request: Request, hub) -> Response:
    body = await read_object(request, hub.config.max_body_bytes, '{"query": "SELECT ..."}')
    size = page_size(request, hub.config.default_page_size, hub.config.max_page_size)
    items, item_type, token = hub.service.query(body.get("query"), size, request.headers.get("x-ms-continuation"))
    headers = {"x-ms-item-type": item_type}
    if token:
        headers["x-ms-continuation"] = token
    return json_response(items, headers=headers)


# -- device side ------------------------------------------------------------------------------------------
async def _read_message(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_D2C_BYTES:
        raise HubError(413, "MessageTooLarge", f"The message is larger than {MAX_D2C_BYTES} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_D2C_BYTES:
            raise HubError(413, "MessageTooLarge", f"The message is larger than {MAX_D2C_BYTES} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


@device_endpoint(rl.D2C_SEND)
async def send_device_event(request: Request, hub) -> Response:
    body = await _read_message(request)
    properties = {name[len(APP_PROPERTY_PREFIX):]: value for name, value in request.headers.items()
                  if name.startswith(APP_PROPERTY_PREFIX)}
    hub.service.record_message(_id(request), len(body), properties)
    return Response(status_code=204)


@device_endpoint(rl.TWIN_READ)
async def device_twin(request: Request, hub) -> Response:
    above = int_param(request.query_params.get("desiredVersionAbove"), "desiredVersionAbove")
    timeout = int_param(request.query_params.get("timeoutSeconds"), "timeoutSeconds") or 30
    deadline = time.monotonic() + min(max(timeout, 0), MAX_LONG_POLL_S)
    while True:
        view = hub.service.device_side_twin(_id(request))
        remaining = deadline - time.monotonic()
        if above is None or view["desired"]["$version"] > above or remaining <= 0:
            return json_response(view)
        # Nothing awaits between the read above and registering here, so no change can slip in between.
        with hub.signals.waiter(_id(request)) as changed, contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=min(remaining, 1.0))


@device_endpoint(rl.TWIN_UPDATE)
async def patch_reported(request: Request, hub) -> Response:
    body = await read_object(request, hub.config.max_body_bytes, "reported properties")
    hub.service.update_reported(_id(request), body)
    return json_response(hub.service.device_side_twin(_id(request)))


@endpoint(None, {READ, SERVICE})
async def device_message_stats(request: Request, hub) -> Response:
    return json_response(hub.service.message_stats(_id(request)))


@endpoint(None, {READ, SERVICE})
async def hub_message_stats(request: Request, hub) -> Response:
    return json_response(hub.service.hub_message_stats())


# -- IoT Edge and configurations --------------------------------------------------------------------------
@endpoint(rl.CONFIGURATION, {WRITE})
async def apply_configuration_content(request: Request, hub) -> Response:
    body = await read_json(request, hub.config.max_body_bytes)
    hub.edge.apply_configuration_content(_id(request), body)
    return Response(status_code=204)


@endpoint(rl.REGISTRY, {READ})
async def list_modules(request: Request, hub) -> Response:
    return json_response(hub.edge.list_modules(_id(request)))


@endpoint(rl.REGISTRY, {READ})
async def get_module(request: Request, hub) -> Response:
    module = hub.edge.get_module(_id(request), request.path_params["mid"])
    return json_response(module, etag=module["etag"])


@endpoint(rl.TWIN_READ, {READ, SERVICE})
async def get_module_twin(request: Request, hub) -> Response:
    twin = hub.edge.get_module_twin(_id(request), request.path_params["mid"])
    return json_response(twin, etag=twin["etag"])


@endpoint(rl.CONFIGURATION, {READ})
async def list_configurations(request: Request, hub) -> Response:
    return json_response(hub.edge.list_configurations(int_param(request.query_params.get("top"), "top")))


@endpoint(rl.CONFIGURATION, {READ})
async def get_configuration(request: Request, hub) -> Response:
    found = hub.edge.get_configuration(_id(request))
    return json_response(found, etag=found["etag"])


@endpoint(rl.CONFIGURATION, {WRITE})
async def put_configuration(request: Request, hub) -> Response:
    body = await read_object(request, hub.config.max_body_bytes, "a configuration")
    stored, created = hub.edge.put_configuration(_id(request), body, request.headers.get("if-match"))
    return json_response(stored, status=201 if created else 200, etag=stored["etag"])


@endpoint(rl.CONFIGURATION, {WRITE})
async def delete_configuration(request: Request, hub) -> Response:
    hub.edge.delete_configuration(_id(request), request.headers.get("if-match"))
    return Response(status_code=204)


ROUTES = [
    Route("/devices", list_devices, methods=["GET"]),
    Route("/devices", bulk_devices, methods=["POST"]),
    Route("/devices/query", query_devices, methods=["POST"]),
    Route("/devices/{id}", get_device, methods=["GET"]),
    Route("/devices/{id}", put_device, methods=["PUT"]),
    Route("/devices/{id}", delete_device, methods=["DELETE"]),
    Route("/devices/{id}/applyConfigurationContent", apply_configuration_content, methods=["POST"]),
    Route("/devices/{id}/messages/events", send_device_event, methods=["POST"]),
    Route("/devices/{id}/messages/stats", device_message_stats, methods=["GET"]),
    Route("/devices/{id}/modules", list_modules, methods=["GET"]),
    Route("/devices/{id}/modules/{mid}", get_module, methods=["GET"]),
    Route("/devices/{id}/twin", device_twin, methods=["GET"]),
    Route("/devices/{id}/twin/properties/reported", patch_reported, methods=["PATCH"]),
    Route("/twins/{id}", get_twin, methods=["GET"]),
    Route("/twins/{id}", patch_twin, methods=["PATCH"]),
    Route("/twins/{id}", replace_twin, methods=["PUT"]),
    Route("/twins/{id}/modules/{mid}", get_module_twin, methods=["GET"]),
    Route("/statistics/devices", device_statistics, methods=["GET"]),
    Route("/statistics/service", service_statistics, methods=["GET"]),
    Route("/statistics/messages", hub_message_stats, methods=["GET"]),
    Route("/configurations", list_configurations, methods=["GET"]),
    Route("/configurations/{id}", get_configuration, methods=["GET"]),
    Route("/configurations/{id}", put_configuration, methods=["PUT"]),
    Route("/configurations/{id}", delete_configuration, methods=["DELETE"]),
]
