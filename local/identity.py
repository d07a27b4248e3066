"""Local managed identity: the App Service identity endpoint protocol, and verification of its tokens.

In Azure, ManagedIdentityCredential reads IDENTITY_ENDPOINT and IDENTITY_HEADER and asks
`GET {IDENTITY_ENDPOINT}?resource=...&api-version=2019-08-01` with header `X-IDENTITY-HEADER`. The local stack
serves the same protocol, so the product's production credential code runs unchanged against the emulators.
Tokens are JWT-shaped (HS256, signed with a stack secret); the emulators verify signature, audience and expiry.

It also stands in for Microsoft Entra towards manufacturing partners (docs/partners.md): `POST /partners/token`
(with the stack's X-IDENTITY-HEADER: operators and tests only) issues a partner an access token shaped like an Entra
v2 app-only token (RS256, `kid`, iss/aud/azp/roles/exp), and `GET /partners/discovery/v2.0/keys` publishes the
signing key as Entra publishes its JWKS. The product validates these tokens with the same code as Entra's
(cert_lifecycle/partners.py), pointed at this issuer by PARTNER_TOKEN_* (local/settings_file.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from local.faults import FaultEngine, engine_from_environment, install

TOKEN_LIFETIME_S = 3600
# The claims Azurite's `--oauth basic` checks besides aud/exp (node_modules/azurite dist/src/blob/authentication/
# BlobTokenAuthenticator.js): nbf, and an issuer starting with https://sts.windows.net/ (VALID_ISSUE_PREFIXES); its Get
# User Delegation Key signs the key for the token's oid and tid. Entra's managed identity tokens carry all four; the
# stack's other emulators verify signature, audience and expiry only (verify_token), so the extra claims change nothing
# there. The ids are fixed, made-up GUIDs: the stack has one tenant and one app identity.
LOCAL_TENANT_ID = "00000000-0000-0000-0000-00000000a11c"
LOCAL_APP_OBJECT_ID = "00000000-0000-0000-0000-0000000000a1"
LOCAL_ISSUER = f"https://sts.windows.net/{LOCAL_TENANT_ID}/"


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
        json.dumps({"aud": audience_of(resource), "sub": subject, "iat": now, "nbf": now, "exp": expires,
                    "iss": LOCAL_ISSUER, "oid": LOCAL_APP_OBJECT_ID, "tid": LOCAL_TENANT_ID}).encode()
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


PARTNER_TOKEN_LIFETIME_S = 30 * 24 * 3600  # locally a month, so a printed header keeps working; Entra's: about 1 h
PARTNER_ROLE = "Certificates.Request"  # cert_lifecycle/partners.py PARTNER_ROLE (local/ does not import the product)


def partner_key(state_dir: Path):
    """The stack's partner-token signing key (RSA 2048, .local/partner-tokens/signing-key.pem), made on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = Path(state_dir) / "partner-tokens" / "signing-key.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _kid(key) -> str:
    from cryptography.hazmat.primitives import serialization

    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64url(hashlib.sha256(der).digest()[:16])


def partner_jwks(key) -> dict:
    from jwt.algorithms import RSAAlgorithm

    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": _kid(key), "use": "sig", "alg": "RS256"}]}


def issue_partner_token(key, issuer: str, audience: str, partner_id: str, roles: list[str] | None = None,
                        lifetime_s: int = PARTNER_TOKEN_LIFETIME_S) -> tuple[str, int]:
    """An access token shaped like Entra's v2 app-only token for the partner's application (azp)."""
    import jwt

    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "azp": partner_id, "sub": partner_id, "oid": partner_id,
              "tid": "local", "ver": "2.0", "iat": now, "nbf": now, "exp": now + lifetime_s,
              "roles": [PARTNER_ROLE] if roles is None else roles}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": _kid(key)}), now + lifetime_s


def identity_app(signing_key: bytes, identity_header: str, partner_signing_key=None, partner_issuer: str = "",
                 partner_audience: str = "", faults: FaultEngine | None = None) -> Starlette:
    """ASGI app serving GET /msi/token like App Service's identity endpoint (and the partner token stand-in).
    faults: a fault engine (local/faults.py); by default the one LOCAL_FAULT_PROFILE names, if any."""

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

    async def partner_token(request: Request) -> JSONResponse:
        if not hmac.compare_digest(request.headers.get("x-identity-header", ""), identity_header):
            return JSONResponse({"error": "unauthorized", "error_description": "bad X-IDENTITY-HEADER"}, 401)
        try:
            body = await request.json()
            partner_id = str(body["partnerId"])
            lifetime = int(body.get("lifetimeSeconds") or PARTNER_TOKEN_LIFETIME_S)
            roles = body.get("roles")
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "invalid_request", "error_description": "{partnerId} expected"}, 400)
        access_token, expires_on = issue_partner_token(partner_signing_key, partner_issuer, partner_audience,
                                                       partner_id, roles, lifetime)
        return JSONResponse({"access_token": access_token, "expires_on": str(expires_on), "token_type": "Bearer"})

    async def partner_keys(request: Request) -> JSONResponse:
        return JSONResponse(partner_jwks(partner_signing_key))

    routes = [Route("/msi/token", token, methods=["GET"])]
    if partner_signing_key is not None:
        routes += [Route("/partners/token", partner_token, methods=["POST"]),
                   Route("/partners/discovery/v2.0/keys", partner_keys, methods=["GET"])]
    return install(Starlette(routes=routes), faults if faults is not None else engine_from_environment("identity"))
