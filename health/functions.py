"""GET /api/health (anonymous) and GET /api/health/details (function key). The triggers only; checks.py does it.

The anonymous route is for the platform's probes and load balancers: it answers the status only (200 ok / 503
error), never which CAs, hubs or errors there are. The details (each component, its duration and failure reason)
need a function or host key: a second route with auth level FUNCTION, because an anonymous function cannot tell
whether a key came with the request (the host checks keys only for the levels that need them). Both answer from one
report cached for HEALTH_CACHE_SECONDS (health/settings.py), computed by one caller at a time, so a flood of health
requests costs the hubs one registry query per interval and never piles up probe threads.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger(__name__)


def _report() -> tuple[int, dict]:
    # Imported on first call: the host indexes function_app on every cold start, and the checks need the clients.
    from health.checks import cached_check_all

    return cached_check_all()


def _answer(status: int, body: dict) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=2), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store"})


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    status, body = _report()
    return _answer(status, {"status": body["status"]})


@bp.function_name("health_details")
@bp.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_details(req: func.HttpRequest) -> func.HttpResponse:
    status, body = _report()
    return _answer(status, body)
