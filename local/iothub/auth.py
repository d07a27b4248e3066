"""Who is calling: IoT Hub SAS tokens (policy or device scope) and local managed-identity bearer tokens.

A SAS token is `SharedAccessSignature sr={url-encoded resource}&sig={url-encoded base64 HMAC}&se={expiry}`
plus `&skn={policy}` for a shared access policy. The signature is HMAC-SHA256, keyed with the base64-decoded
key, over `{sr as sent}\\n{se}`: exactly what azure-iot-hub's SasToken builds. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from local.identity import verify_token

IOT_HUB_AUDIENCE = "https://iothubs.azure.net"

REGISTRY_READ = "RegistryRead"
REGISTRY_WRITE = "RegistryWrite"
SERVICE_CONNECT = "ServiceConnect"
DEVICE_CONNECT = "DeviceConnect"
ALL_RIGHTS = frozenset({REGISTRY_READ, REGISTRY_WRITE, SERVICE_CONNECT, DEVICE_CONNECT})
# Rights of the policies a new hub comes with; any other configured policy name gets every right.
POLICY_RIGHTS = {
    "iothubowner": ALL_RIGHTS,
    "service": frozenset({SERVICE_CONNECT}),
    "device": frozenset({DEVICE_CONNECT}),
    "registryRead": frozenset({REGISTRY_READ}),
    "registryReadWrite": frozenset({REGISTRY_READ, REGISTRY_WRITE}),
}


class AuthError(Exception):
    """The caller is not authenticated; the message says why (it goes into the 401 body)."""


@dataclass(frozen=True)
class Principal:
    kind: str  # "policy", "identity" or "device"
    name: str  # policy name, token subject or device id
    rights: frozenset[str]


def sign(key_b64: str, resource: str, expiry: int | str) -> str:
    """The base64 signature (not url-encoded) of a SAS token for resource (as it appears in sr=)."""
    key = base64.b64decode(key_b64)
    digest = hmac.new(key, f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def make_sas(host_name: str, key_b64: str, policy: str | None = None, ttl_s: int = 3600) -> str:
    """A token as the SDKs build it (for tests and simulated devices)."""
    resource = urllib.parse.quote_plus(host_name)
    expiry = int(time.time() + ttl_s)
    token = f"SharedAccessSignature sr={resource}&sig={urllib.parse.quote(sign(key_b64, resource, expiry))}"
    token += f"&se={expiry}"
    return token + (f"&skn={policy}" if policy else "")


def parse_sas(token: str) -> dict[str, str]:
    """Fields of a SAS token, values as sent (still url-encoded)."""
    scheme, _, rest = token.strip().partition(" ")
    if scheme != "SharedAccessSignature" or not rest:
        raise AuthError("not a SharedAccessSignature token")
    fields: dict[str, str] = {}
    for part in rest.split("&"):
        name, sep, value = part.partition("=")
        if not sep or not name or name in fields:
            raise AuthError("malformed SharedAccessSignature token")
        fields[name] = value
    for required in ("sr", "sig", "se"):
        if not fields.get(required):
            raise AuthError(f"SharedAccessSignature token without {required}")
    return fields


def _resource_path(sr: str, host_name: str) -> str | None:
    """The part of sr after the host ('' for the hub itself), or None when sr names another host."""
    resource = urllib.parse.unquote_plus(sr).lower()
    for prefix in ("https://", "http://"):
        resource = resource.removeprefix(prefix)
    host = host_name.lower()
    if resource == host or resource == host + "/":
        return ""
    if resource.startswith(host + "/"):
        return resource[len(host) :].rstrip("/")
    return None


def _signature_matches(sig_field: str, key_b64: str, sr: str, se: str) -> bool:
    try:
        expected = sign(key_b64, sr, se)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(urllib.parse.unquote(sig_field), expected)


def verify_sas(
    token: str,
    host_name: str,
    policies: Mapping[str, str],
    device_keys: Callable[[str], list[str]] | None = None,
    now: float | None = None,
) -> Principal:
    """Check a SAS token against the hub's policies, or (no skn) a device's symmetric keys."""
    fields = parse_sas(token)
    try:
        expiry = int(fields["se"])
    except ValueError as exc:
        raise AuthError("se is not a number") from exc
    if expiry < (time.time() if now is None else now):
        raise AuthError("SharedAccessSignature token expired")
    path = _resource_path(fields["sr"], host_name)
    if path is None:
        raise AuthError(f"token audience (sr) is not {host_name}")
    policy = fields.get("skn")
    if policy is not None:
        key = policies.get(policy)
        if key is None or not _signature_matches(fields["sig"], key, fields["sr"], fields["se"]):
            raise AuthError("signature or policy name does not match")
        return Principal("policy", policy, POLICY_RIGHTS.get(policy, ALL_RIGHTS))
    # A device-scoped token: sr = {host}/devices/{deviceId}, signed with one of the device's keys.
    parts = path.split("/")
    if device_keys is None or len(parts) != 3 or parts[1] != "devices" or not parts[2]:
        raise AuthError("token carries no policy name (skn) and is not scoped to a device")
    device_id = urllib.parse.unquote(urllib.parse.unquote_plus(fields["sr"]).rstrip("/").rsplit("/", 1)[1])
    for key in device_keys(device_id):
        if _signature_matches(fields["sig"], key, fields["sr"], fields["se"]):
            return Principal("device", device_id, frozenset({DEVICE_CONNECT}))
    raise AuthError("signature does not match the device's keys")


def authenticate(
    authorization: str | None,
    host_name: str,
    policies: Mapping[str, str],
    identity_key: bytes | None,
    device_keys: Callable[[str], list[str]] | None = None,
) -> Principal:
    """Principal behind an Authorization header value, or AuthError."""
    if not authorization:
        raise AuthError("no Authorization header")
    if authorization.startswith("SharedAccessSignature "):
        return verify_sas(authorization, host_name, policies, device_keys)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token:
        if identity_key is None:
            raise AuthError("this hub does not accept Microsoft Entra tokens")
        reason = verify_token(identity_key, token.strip(), {IOT_HUB_AUDIENCE})
        if reason:
            raise AuthError(reason)
        # Tokens of the local identity stand for an app with IoT Hub Data Contributor on the hub.
        return Principal("identity", "managed-identity", ALL_RIGHTS - {DEVICE_CONNECT})
    raise AuthError("unsupported Authorization scheme")
