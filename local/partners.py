"""Partner credentials of the local stack: what `onboarding partners create`, the fleet demo and the tests use to get
the bearer token a manufacturing partner sends (docs/partners.md). The stack's identity endpoint issues it
(local/identity.py, `POST /partners/token` with the stack's X-IDENTITY-HEADER); in Azure the partner's own Entra
application gets its token from Entra and nothing here applies."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping


def is_local(values: Mapping[str, str]) -> bool:
    """Whether the settings are the local stack's: its partner token issuer is the identity endpoint on loopback."""
    issuer = (values.get("PARTNER_TOKEN_ISSUER") or "").strip()
    host = urllib.parse.urlsplit(issuer).hostname
    return bool(values.get("IDENTITY_ENDPOINT") and values.get("IDENTITY_HEADER")) and host in ("127.0.0.1",
                                                                                                   "localhost")


def partner_token(values: Mapping[str, str], partner_id: str, *, roles: list[str] | None = None,
                  lifetime_s: int | None = None, timeout_s: float = 10) -> str:
    """A partner access token from the local stack (the value after `Bearer `)."""
    endpoint = urllib.parse.urlsplit(values["IDENTITY_ENDPOINT"])
    body: dict = {"partnerId": partner_id}
    if roles is not None:
        body["roles"] = roles
    if lifetime_s is not None:
        body["lifetimeSeconds"] = lifetime_s
    request = urllib.request.Request(f"{endpoint.scheme}://{endpoint.netloc}/partners/token", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "X-IDENTITY-HEADER": values["IDENTITY_HEADER"]})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())["access_token"]


def partner_authorization(values: Mapping[str, str], partner_id: str, **kwargs) -> str:
    """The Authorization header value the partner sends with the function key."""
    return f"Bearer {partner_token(values, partner_id, **kwargs)}"


def create_local_partner(values: Mapping[str, str], name: str, **scope) -> tuple[str, str]:
    """A partner registered in the stack's SQL (the product's PartnerDirectory) and its Authorization value:
    (partner id, "Bearer ..."). scope: facilities, sensor_types, serial_prefix, daily_quota (as PartnerDirectory.create)
    takes them)."""
    from cert_lifecycle.partners import PartnerDirectory
    from shared.sql import Database

    db = Database(values["SQL_CONNECTION_STRING"])
    try:
        partner = PartnerDirectory(db).create(name, **scope)
    finally:
        db.close()
    return partner.partner_id, partner_authorization(values, partner.partner_id)
