"""JSON over HTTP(S) for the stand-ins that play Azure's and the field's side: the DPS simulator, the simulated
sensors, the factory. Product code keeps the Azure SDKs; these callers are not the product.

urllib3's pool is thread-safe and reuses connections; `requests` adds per-call session work on top of it
(environment proxy look-ups, setting merges, hooks) that cost the simulated fleet more CPU than the HTTP itself
at thousands of devices on two cores, and that CPU is taken from the functions under test.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3


class HttpError(Exception):
    """An answer outside 2xx, or no answer (connection refused, timeout): the message says which."""

    def __init__(self, message: str, status: int | None = None, body: bytes = b""):
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class JsonResponse:
    status: int
    headers: dict[str, str]
    data: bytes

    def json(self) -> Any:
        return json.loads(self.data) if self.data else None

    def raise_for_status(self, what: str = "request") -> JsonResponse:
        if not 200 <= self.status < 300:
            raise HttpError(f"{what} answered {self.status}: {self.data[:200].decode(errors='replace')}",
                            self.status, self.data)
        return self


class JsonClient:
    """One pool for a base URL (or for absolute URLs when base_url is empty); share it between threads."""

    def __init__(self, base_url: str = "", ca_bundle: str | None = None, pool_size: int = 64,
                 timeout_s: float = 30, connect_retries: int = 2, ssl_context: ssl.SSLContext | None = None,
                 num_pools: int = 8):
        """ssl_context: one made by the caller (a client certificate, trust loaded once), used for every
        connection instead of ca_bundle."""
        self.base_url = base_url.rstrip("/")
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_bundle} if ca_bundle else {}
        if ssl_context is not None:
            tls = {"ssl_context": ssl_context}
        self._pool = urllib3.PoolManager(num_pools=num_pools, maxsize=pool_size, **tls)
        self.timeout_s = timeout_s
        # Only failures to connect are retried here: a request that reached the server is not sent twice.
        self._retries = urllib3.Retry(total=connect_retries, connect=connect_retries, read=0, status=0, redirect=0,
                                      other=0, backoff_factor=0.1)

    def request(self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None,
                headers: dict[str, str] | Callable[[], dict[str, str]] | None = None,
                timeout_s: float | None = None, throttled_attempts: int = 1,
                content: bytes | None = None) -> JsonResponse:
        """One call; a throttled (429) or busy (503) answer is tried again after its Retry-After, up to
        throttled_attempts calls in all. headers may be a function, for a token made fresh for each try.
        content: raw bytes to send instead of a JSON body."""
        for attempt in range(throttled_attempts):
            response = self._send(method, path, params, body, headers() if callable(headers) else headers,
                                  timeout_s, content)
            if response.status not in (429, 503) or attempt == throttled_attempts - 1:
                return response
            time.sleep(min(float(response.headers.get("Retry-After", "1") or 1), 10))
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, params: dict[str, str] | None, body: Any,
              headers: dict[str, str] | None, timeout_s: float | None, content: bytes | None = None) -> JsonResponse:
        url = path if "://" in path else self.base_url + path
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        all_headers = dict(headers or {})
        payload = content
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            all_headers.setdefault("Content-Type", "application/json")
        try:
            response = self._pool.request(method, url, body=payload, headers=all_headers, retries=self._retries,
                                          timeout=timeout_s or self.timeout_s)
        except urllib3.exceptions.HTTPError as exc:
            raise HttpError(f"{method} {url.split('?')[0]}: {type(exc).__name__}: {exc}") from exc
        return JsonResponse(response.status, dict(response.headers), response.data)

    def close(self) -> None:
        self._pool.clear()
