"""Local managed identity: the App Service identity endpoint protocol, and verification of its tokens.

In Azure, ManagedIdentityCredential reads IDENTITY_ENDPOINT and IDENTITY_HEADER and asks
`GET {IDENTITY_ENDPOINT}?resource=...&api-version=2019-08-01` with header `X-IDENTITY-HEADER`. The local stack
serves the same protocol, so the product's production credential code runs unchanged against the emulators.
Tokens are JWT-shaped (HS256, signed with a stack secret); the emulators verify signature, audience and expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOKEN_LIFETIME_S = 3600


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def audience_of(resource_or_scope: str) -> str:
    """'https://vault.azure.net/.default' and 'https://vault.azure.net' name the same audience."""
    aud = resource_or_scope.strip()
    if aud.endswith("/.default"):
        aud = aud[: -len("/.default")]
    return aud.rstrip("/")


def issue_token(signing_key: bytes, resource: str, subject: str = "local-function-app") -> tuple[str, int]:
    now = int(time.time())
    expires = now + TOKEN_LIFETIME_S
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(
        json.dumps({"aud": audience_of(resource), "sub": subject, "iat": now, "exp": expires}).encode()
    )
    signature = hmac.new(signing_key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}", expires


def verify_token(signing_key: bytes, token: str, audiences: set[str]) -> str | None:
    """Return None when the token is valid for one of audiences, else the reason it is not."""
    parts = token.split(".")
    if len(parts) != 3:
        return "malformed token"
    expected = hmac.new(signing_key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _b64url_decode(parts[2])):
            return "bad signature"
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, TypeError):
        return "malformed token"
    if not isinstance(claims, dict) or int(claims.get("exp", 0)) < time.time():
        return "token expired"
    if audience_of(str(claims.get("aud", ""))) not in {audience_of(a) for a in audiences}:
        return "wrong audience"
    return None


def identity_app(signing_key: bytes, identity_header: str) -> Starlette:
    """ASGI app serving GET /msi/token like App Service's identity endpoint."""

    async def token(request: Request) -> JSONResponse:
        if not hmac.compare_digest(request.headers.get("x-identity-header", ""), identity_header):
            return JSONResponse({"error": "unauthorized", "error_description": "bad X-IDENTITY-HEADER"}, 401)
        resource = request.query_params.get("resource")
        if not resource:
            return JSONResponse({"error": "invalid_request", "error_description": "resource missing"}, 400)
        access_token, expires_on = issue_token(signing_key, resource)
        return JSONResponse(
            {
                "access_token": access_token,
                "expires_on": str(expires_on),
                "resource": audience_of(resource),
                "token_type": "Bearer",
                "client_id": "00000000-0000-0000-0000-00000000c0de",
            }
        )

    return Starlette(routes=[Route("/msi/token", token, methods=["GET"])])
