"""HTTP answers of the product's HTTP triggers: JSON bodies, refusals as {"error": {...}} (shared/errors.py)."""

from __future__ import annotations

import json

import azure.functions as func

from shared.errors import OnboardingError


def json_response(body: dict, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def json_object(body: bytes, max_bytes: int, expected: str = "a JSON object") -> dict:
    """The request body as a JSON object: request_too_large above max_bytes, invalid_request when it is not JSON
    or not an object (`expected` says what was expected)."""
    if len(body) > max_bytes:
        raise OnboardingError("request_too_large", f"{len(body)} bytes (at most {max_bytes})")
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise OnboardingError("invalid_request", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise OnboardingError("invalid_request", f"expected {expected}")
    return data
