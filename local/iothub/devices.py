"""Device identities: what PUT /devices/{id} accepts and what the registry stores and returns. Pure.

The JSON fields are those of the service API's Device model (azure-iot-hub protocol/models/device.py).
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
import secrets
from typing import Any

from local.iothub.errors import bad_request

NEVER = "0001-01-01T00:00:00Z"  # IoT Hub's "no value yet" timestamp
# Device ids: up to 128 ASCII alphanumerics and - : . + % _ # * ? ! ( ) , = @ ; $ '
DEVICE_ID = re.compile(r"^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$")
AUTH_TYPES = {"sas": "sas", "selfsigned": "selfSigned", "certificateauthority": "certificateAuthority", "none": "none"}
THUMBPRINT = re.compile(r"^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID.match(device_id):
        raise bad_request(
            f"DeviceId '{device_id[:140]}' is invalid: up to 128 ASCII letters, digits and - : . + % _ # * ? ! "
            "( ) , = @ ; $ '"
        )
    return device_id


def new_etag() -> str:
    """Registry etags look like base64 of a decimal number ("MTk5NjYwOTM3")."""
    return base64.b64encode(str(secrets.randbelow(10**9) + 10**8).encode()).decode()


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _symmetric_key(value: Any, which: str) -> str:
    if value in (None, ""):
        return new_key()
    try:
        raw = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"symmetricKey.{which} is not valid base64.") from exc
    if not 16 <= len(raw) <= 64:
        raise bad_request(f"symmetricKey.{which} must decode to 16 to 64 bytes.")
    return str(value)


def _authentication(body: Any) -> dict[str, Any]:
    auth = body if isinstance(body, dict) else {}
    kind = AUTH_TYPES.get(str(auth.get("type") or "sas").lower())
    if kind is None:
        raise bad_request(f"authentication.type '{auth.get('type')}' is not one of {', '.join(AUTH_TYPES.values())}.")
    keys = auth.get("symmetricKey") if isinstance(auth.get("symmetricKey"), dict) else {}
    prints = auth.get("x509Thumbprint") if isinstance(auth.get("x509Thumbprint"), dict) else {}
    result = {
        "symmetricKey": {"primaryKey": None, "secondaryKey": None},
        "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
        "type": kind,
    }
    if kind == "sas":
        result["symmetricKey"] = {
            "primaryKey": _symmetric_key(keys.get("primaryKey"), "primaryKey"),
            "secondaryKey": _symmetric_key(keys.get("secondaryKey"), "secondaryKey"),
        }
    elif kind == "selfSigned":
        primary, secondary = prints.get("primaryThumbprint"), prints.get("secondaryThumbprint")
        for name, value in (("primaryThumbprint", primary), ("secondaryThumbprint", secondary)):
            if value is not None and not THUMBPRINT.match(str(value)):
                raise bad_request(f"x509Thumbprint.{name} must be a SHA-1 or SHA-256 hex thumbprint.")
        if not primary:
            raise bad_request("selfSigned authentication needs x509Thumbprint.primaryThumbprint.")
        result["x509Thumbprint"] = {
            "primaryThumbprint": primary.upper(),
            "secondaryThumbprint": secondary.upper() if secondary else None,
        }
    return result


def build_device(body: dict[str, Any], device_id: str, existing: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """The stored identity after a create (existing None) or an update of device_id with body."""
    body_id = body.get("deviceId")
    if body_id is not None and body_id != device_id:
        raise bad_request(f"DeviceId in the body ('{body_id}') does not match the one in the URL ('{device_id}').")
    status = str(body.get("status") or "enabled")
    if status not in ("enabled", "disabled"):
        raise bad_request(f"status '{status}' is not enabled or disabled.")
    capabilities = body.get("capabilities") if isinstance(body.get("capabilities"), dict) else {}
    iot_edge = capabilities.get("iotEdge", False)
    if not isinstance(iot_edge, bool):
        raise bad_request("capabilities.iotEdge must be true or false.")
    parent_scopes = body.get("parentScopes") or []
    if not isinstance(parent_scopes, list) or not all(isinstance(s, str) for s in parent_scopes):
        raise bad_request("parentScopes must be a list of strings.")
    if existing is None:
        generation = str(secrets.randbelow(10**17) + 637 * 10**15)
        device = {
            "deviceId": device_id,
            "generationId": generation,
            "connectionState": "Disconnected",
            "connectionStateUpdatedTime": NEVER,
            "statusUpdatedTime": NEVER,
            "lastActivityTime": NEVER,
            "cloudToDeviceMessageCount": 0,
        }
    else:
        device = copy.deepcopy(existing)
        if existing["status"] != status:
            device["statusUpdatedTime"] = now
    device.update(
        etag=new_etag(),
        status=status,
        statusReason=body.get("statusReason"),
        authentication=_authentication(body.get("authentication")),
        capabilities={"iotEdge": iot_edge},
        parentScopes=parent_scopes,
    )
    scope = body.get("deviceScope")
    if iot_edge:
        # Edge devices get a generated, immutable scope that their children reference.
        kept = str(device.get("deviceScope") or "")
        scope = (
            kept
            if kept.startswith("ms-azure-iot-edge://")
            else f"ms-azure-iot-edge://{device_id}-{device['generationId']}"
        )
    device["deviceScope"] = scope or None
    return device


def device_keys(device: dict[str, Any]) -> list[str]:
    keys = (device.get("authentication") or {}).get("symmetricKey") or {}
    return [k for k in (keys.get("primaryKey"), keys.get("secondaryKey")) if k]
