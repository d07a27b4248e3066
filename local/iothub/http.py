"""HTTP plumbing shared by the routes: bounded JSON bodies, IoT Hub error answers, paging headers.

Bad input must end in a 4xx answer, never in a 500 or a hang: bodies are read up to a limit, parsed with
errors mapped to IotHubFormatError, and checked for absurd nesting before any recursive code sees them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from local.iothub.errors import HubError, bad_request, error_body

API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
MAX_JSON_NESTING = 64
NO_BODY = object()


def error_response(error: HubError) -> JSONResponse:
    headers = {"iothub-errorcode": error.code, **error.headers}
    return JSONResponse(error_body(error.code, error.message), status_code=error.status, headers=headers)


def json_response(value: Any, status: int = 200, etag: str | None = None, headers: dict | None = None) -> Response:
    extra = dict(headers or {})
    if etag:
        extra["ETag"] = f'"{etag}"'
    return JSONResponse(value, status_code=status, headers=extra)


def require_api_version(request: Request) -> None:
    """IoT Hub refuses requests without a well-formed api-version query parameter."""
    version = request.query_params.get("api-version")
    if not version or not API_VERSION.match(version):
        raise HubError(400, "InvalidProtocolVersion", "The api-version query parameter is missing or malformed.")


def _nesting(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_NESTING:
                return deepest
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body, NO_BODY when empty; 413 when larger than max_bytes, 400 when not JSON."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise HubError(413, "MessageTooLarge", f"The request body is larger than {max_bytes} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HubError(413, "MessageTooLarge", f"The request body is larger than {max_bytes} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return NO_BODY
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HubError(400, "IotHubFormatError", f"The request body is not valid JSON: {str(exc)[:200]}") from exc
    if _nesting(value) > MAX_JSON_NESTING:
        raise bad_request(f"The request body nests deeper than {MAX_JSON_NESTING} levels.")
    return value


async def read_object(request: Request, max_bytes: int, what: str) -> dict[str, Any]:
    value = await read_json(request, max_bytes)
    if value is NO_BODY:
        raise bad_request(f"The request needs a JSON body ({what}).")
    if not isinstance(value, dict):
        raise bad_request(f"The body must be a JSON object ({what}).")
    return value


def int_param(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise bad_request(f"{name} must be an integer.") from exc


def page_size(request: Request, default: int, maximum: int) -> int:
    """x-ms-max-item-count: pages of up to `maximum` items (1000 in IoT Hub); larger asks get the maximum."""
    value = int_param(request.headers.get("x-ms-max-item-count"), "x-ms-max-item-count")
    if value is None:
        return default
    if value < 1:
        raise bad_request("x-ms-max-item-count must be at least 1.")
    return min(value, maximum)
