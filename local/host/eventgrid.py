"""The Event Grid extension's webhook: POST/OPTIONS /runtime/webhooks/EventGrid?functionName={name}.

Mirrors Microsoft.Azure.WebJobs.Extensions.EventGrid (v3, HttpRequestProcessor and the config provider):
- unknown functionName -> 404 "cannot find function: '...'";
- OPTIONS (CloudEvents abuse protection) -> 200 with Webhook-Allowed-Origin: the request's
  WebHook-Request-Origin when it is an Event Grid origin, else eventgrid.azure.net;
- aeg-event-type SubscriptionValidation -> 200 {"validationResponse": code}, the function is not called
  (data.validationCode of the first event; a CloudEvent carries data double-encoded as a string);
- aeg-event-type Notification -> a JSON array (Event Grid schema, or a CloudEvents batch) or one object
  (a CloudEvent); each event is one invocation, all run concurrently; any failure -> 500 with the error
  text (Event Grid then redelivers the whole request), else 202;
- aeg-event-type Unsubscribe -> 202; no or another aeg-event-type -> 400.
Deviation: a body that is not JSON (or an event that is not an object) gets 400 here; the extension throws.

Each event reaches the function through the azure-functions library's own Event Grid converter, as in the
worker: an Event Grid schema event becomes func.EventGridEvent; an event with `specversion` becomes
func.CloudEvent (azure-functions >= the release with CloudEvent support; 1.26 here), whose fields are
type/source/time rather than event_type/topic/event_time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from local.host.invocation import Invoker
from local.host.loader import EVENT_GRID_TRIGGER, FunctionSpec

EVENT_GRID_ORIGINS = ("eventgrid.azure.net", "eventgrid.azure.us", "eventgrid.azure.eaglex.ic.gov",
                      "eventgrid.azure.microsoft.scloud", "eventgrid.azure.cn")


class MalformedEvent(ValueError):
    """The request body or an event in it cannot be read as Event Grid / CloudEvents JSON."""


def to_trigger_value(event: Any) -> Any:
    """One event (a JSON object) as the function receives it: func.EventGridEvent or func.CloudEvent."""
    if not isinstance(event, dict):
        raise MalformedEvent(f"each event must be a JSON object, got {type(event).__name__}")
    try:
        return EventGridEventInConverter.decode(meta.Datum(json.dumps(event), "json"), trigger_metadata=None)
    except (ValueError, TypeError) as exc:
        raise MalformedEvent(f"event {event.get('id')!r} cannot be read: {exc}") from exc


class EventGridWebhook:
    def __init__(self, functions: Sequence[FunctionSpec], invoker: Invoker):
        self.functions = {f.name: f for f in functions if f.trigger_type == EVENT_GRID_TRIGGER}
        self._invoker = invoker

    async def handle(self, request: Request) -> Response:
        name = request.query_params.get("functionName") or ""
        spec = self.functions.get(name)
        if spec is None:
            return PlainTextResponse(f"cannot find function: '{name}'", status_code=404)
        if request.method == "OPTIONS":
            origin = request.headers.get("webhook-request-origin", "")
            allowed = origin if origin.lower() in EVENT_GRID_ORIGINS else EVENT_GRID_ORIGINS[0]
            return Response(status_code=200, headers={"Webhook-Allowed-Origin": allowed})
        kind = request.headers.get("aeg-event-type", "").lower()
        if kind == "unsubscribe":
            return Response(status_code=202)
        if kind not in ("subscriptionvalidation", "notification"):
            return PlainTextResponse("aeg-event-type must be SubscriptionValidation, Notification or Unsubscribe",
                                     status_code=400)
        try:
            body = json.loads(await request.body())
            if kind == "subscriptionvalidation":
                return JSONResponse({"validationResponse": _validation_code(body)})
            events = body if isinstance(body, list) else [body] if isinstance(body, dict) else None
            if events is None:
                raise MalformedEvent(f"the body must be a JSON object or array, got {type(body).__name__}")
            values = [to_trigger_value(event) for event in events]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return PlainTextResponse(f"malformed Event Grid request: {exc}", status_code=400)
        results = await asyncio.gather(*(self._invoker.invoke(spec, value) for value in values))
        failed = next((r for r in results if not r.succeeded), None)
        if failed is not None:
            return PlainTextResponse(str(failed.error), status_code=500)
        return Response(status_code=202)


def _validation_code(body: Any) -> str:
    event = body[0] if isinstance(body, list) else body
    data = event["data"]
    if isinstance(data, str):
        data = json.loads(data)
    return str(data["validationCode"])
