"""The host's admin API, the subset Core Tools users rely on.

- POST /admin/functions/{name} with {"input": "..."} runs a non-HTTP function, as the host's
  FunctionsController.Invoke does: no body -> 400, unknown function -> 404, otherwise the invocation is
  started in the background and the answer is 202 at once (poll the function's effects, not the response).
  Timer: a TimerRequest (past_due False); queue: a QueueMessage whose body is the input; Event Grid: the
  input parsed as one event (unparseable -> 400 here; the host would accept and then fail the invocation).
  HTTP functions are refused with 400: call their URL.
- GET /admin/functions lists the functions; GET /admin/host/status answers {"state": "Running"}.
Keys: Azure requires the master key on /admin/*; so does this host when keys are configured, except for
host/status, which stays open as a health probe.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.functions.queue import QueueMessage
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from local.host.eventgrid import MalformedEvent, to_trigger_value
from local.host.invocation import Invoker
from local.host.keys import HostKeys, presented_key
from local.host.loader import EVENT_GRID_TRIGGER, QUEUE_TRIGGER, TIMER_TRIGGER, FunctionSpec
from local.host.timers import timer_request

HOST_VERSION = "4.x (local dev host)"


class AdminApi:
    def __init__(self, functions: Sequence[FunctionSpec], invoker: Invoker, keys: HostKeys | None,
                 describe: Callable[[FunctionSpec, str], dict[str, Any]]):
        self.functions = {f.name.lower(): f for f in functions}
        self._invoker = invoker
        self._keys = keys
        self._describe = describe
        self._background: set[asyncio.Task[Any]] = set()

    async def status(self, request: Request) -> Response:
        return JSONResponse({"state": "Running", "version": HOST_VERSION, "functions": len(self.functions)})

    async def list_functions(self, request: Request) -> Response:
        if not self._authorised(request):
            return Response(status_code=401)
        base_url = str(request.base_url).rstrip("/")
        return JSONResponse([self._describe(spec, base_url) for spec in self.functions.values()])

    async def invoke(self, request: Request) -> Response:
        if not self._authorised(request):
            return Response(status_code=401)
        try:
            payload = json.loads(await request.body() or b"null")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return PlainTextResponse('expected a JSON body {"input": "..."}', status_code=400)
        spec = self.functions.get(request.path_params["name"].lower())
        if spec is None:
            return Response(status_code=404)
        raw = payload.get("input")
        text = raw if isinstance(raw, str) or raw is None else json.dumps(raw)
        try:
            trigger_value = _trigger_value(spec, text or "")
        except (MalformedEvent, ValueError) as exc:
            return PlainTextResponse(str(exc), status_code=400)
        task = asyncio.create_task(self._invoker.invoke(spec, trigger_value))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return Response(status_code=202)

    def _authorised(self, request: Request) -> bool:
        if self._keys is None:
            return True
        return self._keys.allows("admin", presented_key(request.query_params, request.headers))


def _trigger_value(spec: FunctionSpec, text: str) -> Any:
    if spec.trigger_type == TIMER_TRIGGER:
        return timer_request(past_due=False)
    if spec.trigger_type == QUEUE_TRIGGER:
        now = datetime.now(UTC)
        return QueueMessage(id=str(uuid.uuid4()), body=text, dequeue_count=1, insertion_time=now,
                            expiration_time=now + timedelta(days=7), time_next_visible=now, pop_receipt=None)
    if spec.trigger_type == EVENT_GRID_TRIGGER:
        try:
            event = json.loads(text)
        except ValueError as exc:
            raise MalformedEvent(f"input must be one Event Grid or CloudEvents event as JSON: {exc}") from None
        return to_trigger_value(event)
    if spec.is_http:
        raise ValueError(f"{spec.name} is an HTTP function: call its URL instead")
    raise ValueError(f"{spec.name}: trigger {spec.trigger_type} is not run by this dev host")
