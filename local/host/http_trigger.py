"""HTTP triggers at /{routePrefix}/{route}: routing, keys, func.HttpRequest in, func.HttpResponse out.

Answers as the Functions host does: no route or a method the trigger does not list -> 404; a missing or
wrong key -> 401; the function raising (or returning something that is not an HttpResponse or str, e.g.
None) -> 500 with an empty body. Query parameters and headers that repeat are joined with ',' (the host
hands the worker one string per name).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import azure.functions as func
from azure.functions.http import HttpRequest
from starlette.requests import Request
from starlette.responses import Response

from local.host.invocation import Invoker
from local.host.keys import HostKeys, presented_key
from local.host.loader import FunctionSpec
from local.host.routing import Router


class HttpTriggers:
    def __init__(self, functions: Sequence[FunctionSpec], route_prefix: str, invoker: Invoker,
                 keys: HostKeys | None):
        self.functions = [f for f in functions if f.is_http]
        self.route_prefix = route_prefix
        self._router: Router[FunctionSpec] = Router((self.template(f), f) for f in self.functions)
        self._invoker = invoker
        self._keys = keys

    def template(self, spec: FunctionSpec) -> str:
        return "/".join(p for p in (self.route_prefix, spec.route.strip("/")) if p)

    async def dispatch(self, request: Request) -> Response:
        method = request.method.upper()
        match = next(((spec, values) for spec, values in self._router.candidates(request.url.path)
                      if spec.methods is None or method in spec.methods), None)
        if match is None:
            return Response(status_code=404)
        spec, route_params = match
        query = _joined(request.query_params.multi_items())
        headers = _joined(request.headers.items())
        if self._keys is not None and not self._keys.allows(spec.auth_level, presented_key(query, headers)):
            return Response(status_code=401)
        body = await request.body()
        http_request = HttpRequest(method, str(request.url), headers=headers, params=query,
                                   route_params=route_params, body_type="bytes", body=body)
        result = await self._invoker.invoke(spec, http_request, convert=to_response)
        if not result.succeeded:
            return Response(status_code=500)
        return result.value


def to_response(value: Any) -> Response:
    """What the worker's HTTP output converter accepts: an HttpResponse or a str."""
    if isinstance(value, str):
        return Response(value.encode(), 200, media_type="text/plain; charset=utf-8")
    if not isinstance(value, func.HttpResponse):
        raise TypeError("unable to encode outgoing TypedData: unsupported type for HTTP output: "
                        f"{type(value).__name__} (return a func.HttpResponse or a str)")
    headers = [(k.lower(), str(v)) for k, v in value.headers.items()
               if k.lower() not in ("content-length", "transfer-encoding")]
    if not any(k == "content-type" for k, _ in headers):
        mimetype = value.mimetype
        headers.append(("content-type", f"{mimetype}; charset={value.charset}" if mimetype.startswith("text/")
                        else mimetype))
    response = Response(value.get_body() or b"", value.status_code)
    response.raw_headers = [h for h in response.raw_headers if h[0] == b"content-length"] + [
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return response


def _joined(items: Any) -> dict[str, str]:
    """Repeated names joined with ',' - the single string per name the host gives the worker."""
    values: dict[str, str] = {}
    for name, value in items:
        values[name] = f"{values[name]},{value}" if name in values else value
    return values
