"""A test-only FunctionApp for the dev host: one function per trigger kind, recording what it received.

Built like the product's function_app.py (a Blueprint registered on the app), so the host indexes it the
same way. Records go to RECORDED (the host runs in the test's process), keyed by function name.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from typing import Any

import azure.functions as func

QUEUE_NAME = "dev-host-work"
RECORDED: defaultdict[str, list[Any]] = defaultdict(list)
_lock = threading.Lock()


def record(function: str, value: Any) -> None:
    with _lock:
        RECORDED[function].append(value)


def recorded(function: str) -> list[Any]:
    with _lock:
        return list(RECORDED[function])


bp = func.Blueprint()


@bp.route(route="hello/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"Hello, {req.route_params['name']}", headers={"X-Greeting": "yes"})


@bp.route(route="items/{id:int}/{detail?}", methods=["GET", "POST"])
def items(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    body = {
        "method": req.method,
        "url": req.url,
        "route_params": dict(req.route_params),
        "params": dict(req.params),
        "header": req.headers.get("x-test"),
        "body": req.get_body().decode(),
        "invocation_id": context.invocation_id,
        "function_name": context.function_name,
    }
    return func.HttpResponse(json.dumps(body), status_code=201, mimetype="application/json")


@bp.route(route="async/{name}", auth_level=func.AuthLevel.ANONYMOUS)
async def async_hello(req: func.HttpRequest) -> str:
    return f"async {req.route_params['name']}"


@bp.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom")


@bp.route(route="nothing", auth_level=func.AuthLevel.ANONYMOUS)
def nothing(req: func.HttpRequest) -> None:
    return None


@bp.route(route="secure/revoke", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("revoked")


app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)


@app.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    if event.subject == "fail":
        raise ValueError("event refused on purpose")
    record("on_event", event)


@app.timer_trigger(arg_name="timer", schedule="0 30 2 * * *", run_on_startup=False)
def nightly(timer: func.TimerRequest) -> None:
    record("nightly", timer)


@app.queue_trigger(arg_name="msg", queue_name=QUEUE_NAME, connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    record("work-attempts", (body, msg.dequeue_count))
    if body == "poison":
        raise ValueError("poison message")
    record("work", msg)
