"""HTTP answers of the product's HTTP triggers: JSON bodies, refusals as {"error": {...}} (shared/errors.py)."""

from __future__ import annotations

import json

import azure.functions as func


def json_response(body: dict, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")
