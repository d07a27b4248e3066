"""GET /api/health (anonymous): the state of every configured dependency. The trigger only; checks.py does it."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.config import SettingError

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    # Imported on first call: the host indexes function_app on every cold start, and the checks need the clients.
    from health.checks import CheckResult, check_all, health_report
    from shared.bootstrap import services

    svc = services()
    try:
        status, body = check_all(svc)
    except SettingError as exc:
        status, body = health_report([CheckResult("settings", False, str(exc), 0.0)])
    if status != 200:
        failing = sorted(name for name, c in body["components"].items() if c["status"] != "ok")
        log.warning("health: %s failing", ", ".join(failing))
    return func.HttpResponse(json.dumps(body, indent=2), status_code=status, mimetype="application/json")
