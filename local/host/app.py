"""The dev host as one ASGI app: Core Tools' URL layout, plus the timer and queue listeners it starts.

Routes (same as `func start`, so docs and scripts work against either):
  /admin/host/status, /admin/functions, /admin/functions/{name}   admin API (admin.py)
  /runtime/webhooks/EventGrid?functionName={name}                  Event Grid extension (eventgrid.py)
  /{routePrefix}/{route}                                           HTTP triggers (http_trigger.py)
Timers and queue listeners run as tasks for the app's lifespan (started and stopped with the server).
Everything that can be checked without the network (routes, schedules, queue names) is checked when the app
is built, so a broken function fails at startup rather than at its first trigger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from local.host.admin import AdminApi
from local.host.eventgrid import EventGridWebhook
from local.host.http_trigger import HttpTriggers
from local.host.invocation import Invoker
from local.host.keys import HostKeys
from local.host.loader import EVENT_GRID_TRIGGER, QUEUE_TRIGGER, TIMER_TRIGGER, FunctionSpec, index_functions
from local.host.ncrontab import Schedule
from local.host.queues import QueueListener, queue_name_for, storage_connection_string
from local.host.settings import HostOptions
from local.host.timers import run_timer, schedule_for, schedule_zone

log = logging.getLogger("local.host")

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]
EVENT_GRID_PATH = "/runtime/webhooks/EventGrid"


@dataclass(frozen=True)
class HostInfo:
    """What the banner and tests need to know about a built host."""

    functions: tuple[FunctionSpec, ...]
    options: HostOptions
    http: HttpTriggers
    keys_enforced: bool


def create_host_app(function_app: Any, host_json: Mapping[str, Any] | None = None, keys: HostKeys | None = None,
                    *, max_workers: int | None = None, listeners: bool = True) -> Starlette:
    """Build the host for a FunctionApp. keys=None disables key checks (like Core Tools). listeners=False: no
    timers or queue listeners here (another worker process of the same host runs them)."""
    options = HostOptions.from_host_json(host_json or {})
    functions = tuple(index_functions(function_app))
    invoker = Invoker(options.function_timeout, max_workers)
    http = HttpTriggers(functions, options.route_prefix, invoker, keys)
    eventgrid = EventGridWebhook(functions, invoker)
    info = HostInfo(functions, options, http, keys is not None)
    admin = AdminApi(functions, invoker, keys, lambda spec, base_url: describe(spec, info, base_url))
    timers = [(spec, schedule_for(spec)) for spec in functions if spec.trigger_type == TIMER_TRIGGER]
    queues = [(spec, queue_name_for(spec)) for spec in functions if spec.trigger_type == QUEUE_TRIGGER]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = _start_listeners(timers, queues, options, invoker) if listeners else []
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            invoker.close()

    async def webhook(request: Request) -> Response:
        if request.path_params["provider"].lower() != "eventgrid":
            return Response(status_code=404)
        return await eventgrid.handle(request)

    async def http_or_home(request: Request) -> Response:
        response = await http.dispatch(request)
        if response.status_code == 404 and request.url.path == "/" and request.method in ("GET", "HEAD"):
            return PlainTextResponse("Your Functions 4.0 app is up and running (local dev host)")
        return response

    app = Starlette(lifespan=lifespan, routes=[
        Route("/admin/host/status", admin.status, methods=["GET"]),
        Route("/admin/functions", admin.list_functions, methods=["GET"]),
        Route("/admin/functions/{name}", admin.invoke, methods=["POST"]),
        Route("/runtime/webhooks/{provider}", webhook, methods=["POST", "OPTIONS"]),
        Route("/{path:path}", http_or_home, methods=ALL_METHODS),
    ])
    app.state.host = info
    return app


def describe(spec: FunctionSpec, info: HostInfo, base_url: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {"name": spec.name, "trigger": spec.trigger_type}
    if spec.is_http:
        entry.update(url=f"{base_url}/{info.http.template(spec)}", methods=list(spec.methods or []),
                     authLevel=spec.auth_level)
    elif spec.trigger_type == EVENT_GRID_TRIGGER:
        entry["url"] = f"{base_url}{EVENT_GRID_PATH}?functionName={spec.name}"
    elif spec.trigger_type == TIMER_TRIGGER:
        entry["schedule"] = spec.trigger.get("schedule")
    elif spec.trigger_type == QUEUE_TRIGGER:
        entry.update(queueName=spec.trigger.get("queueName"), connection=spec.trigger.get("connection"))
    return entry


def banner(app: Starlette, base_url: str) -> str:
    """The function list Core Tools prints at startup, with this host's URLs."""
    info: HostInfo = app.state.host
    lines = ["Functions:", ""]
    for spec in info.functions:
        if spec.is_http:
            methods = f"[{','.join(spec.methods)}] " if spec.methods else ""
            lines.append(f"  {spec.name}: {methods}{base_url}/{info.http.template(spec)}")
        elif spec.trigger_type == EVENT_GRID_TRIGGER:
            lines.append(f"  {spec.name}: eventGridTrigger (POST {base_url}{EVENT_GRID_PATH}?functionName={spec.name})")
        else:
            lines.append(f"  {spec.name}: {spec.trigger_type}")
    if not info.functions:
        lines.append("  (none found)")
    return "\n".join(lines)


def _start_listeners(timers: Sequence[tuple[FunctionSpec, Schedule]], queues: Sequence[tuple[FunctionSpec, str]],
                     options: HostOptions, invoker: Invoker) -> list[asyncio.Task[None]]:
    tasks = []
    zone = schedule_zone()
    for spec, schedule in timers:
        tasks.append(_supervised(spec, run_timer(spec, schedule, invoker, zone)))
    for spec, queue_name in queues:
        try:
            connection = storage_connection_string(spec.trigger.get("connection"))
        except ValueError as exc:
            log.error("The listener for function 'Functions.%s' was unable to start. %s", spec.name, exc)
            continue
        listener = QueueListener(spec, queue_name, connection, options.queues, invoker)
        tasks.append(_supervised(spec, listener.run()))
    return tasks


def _supervised(spec: FunctionSpec, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    async def guarded() -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("The listener for function 'Functions.%s' stopped", spec.name)

    return asyncio.create_task(guarded(), name=f"listener-{spec.name}")
