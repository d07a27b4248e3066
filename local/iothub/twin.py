"""Twin documents: validation against IoT Hub's limits, merge-patch, $metadata, versions and etags. Pure.

A twin's state is kept as plain sections plus counters; the JSON the REST API returns (with $metadata and
$version inside desired/reported) is built on the way out, so incoming copies of those read-only fields can
never overwrite them.
"""

from __future__ import annotations

import base64
import copy
import math
import unicodedata
from typing import Any

from local.iothub.config import TwinLimits
from local.iothub.errors import HubError, bad_request

MAX_INT = 4503599627370495
MIN_INT = -4503599627370496
SYSTEM_KEYS = ("$metadata", "$version")


def twin_etag(sequence: int) -> str:
    """IoT Hub's twin etags are base64 of a 64-bit counter ("AAAAAAAAAAE=")."""
    return base64.b64encode(sequence.to_bytes(8, "big")).decode()


def new_state(now: str) -> dict[str, Any]:
    return {
        "tags": {},
        "desired": {},
        "reported": {},
        "desiredMeta": {"$lastUpdated": now},
        "reportedMeta": {"$lastUpdated": now},
        "desiredVersion": 1,
        "reportedVersion": 1,
        "version": 2,
        "etagSeq": 1,
    }


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def _has_forbidden_character(key: str) -> bool:
    if key.isascii() and key.isprintable():  # the common case: no control characters to look up
        return any(ch in key for ch in ".$ ")
    return any(ch in ".$ " or _is_control(ch) for ch in key)


def _check_key(key: str, where: str, limits: TwinLimits) -> None:
    if not key or len(key.encode()) > limits.max_key_bytes:
        raise bad_request(f"Property or Tag name must be 1 to {limits.max_key_bytes} bytes. Error in {where}")
    if _has_forbidden_character(key):
        raise bad_request(
            f"Property or Tag name '{key}' contains an invalid character ('.', '$', space or a control "
            f"character). Error in {where}"
        )


def _check_value(value: Any, where: str, depth: int, limits: TwinLimits) -> None:
    if isinstance(value, dict):
        if depth > limits.max_depth:
            raise bad_request(f"Nesting depth of {where} exceeds the maximum of {limits.max_depth} levels.")
        for key, child in value.items():
            _check_key(key, where, limits)
            _check_value(child, f"{where}.{key}", depth + 1, limits)
    elif isinstance(value, list):
        if depth > limits.max_depth:
            raise bad_request(f"Nesting depth of {where} exceeds the maximum of {limits.max_depth} levels.")
        for item in value:
            _check_value(item, where, depth + 1, limits)
    elif isinstance(value, str):
        if len(value.encode()) > limits.max_string_bytes:
            raise bad_request(
                f"Property or Tag value should be maximum {limits.max_string_bytes} bytes. "
                f"Error in Property/Tag {where}"
            )
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise bad_request(f"Integer value out of range [{MIN_INT}, {MAX_INT}]. Error in {where}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise bad_request(f"Number value must be finite. Error in {where}")
    else:
        raise bad_request(f"Unsupported value type. Error in {where}")


def validate_section(section: Any, label: str, limits: TwinLimits) -> dict[str, Any]:
    """The section (tags, desired or reported) if it is a valid JSON object for a twin, else HubError 400."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise bad_request(f"{label} must be a JSON object.")
    _check_value(section, label, 0, limits)
    return section


def size_of(value: Any) -> int:
    """Twin size as IoT Hub documents it: keys and strings as UTF-8 without control characters,
    numbers 8 bytes, booleans 4, objects the sum of their members."""
    if isinstance(value, dict):
        return sum(_text_size(k) + size_of(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(size_of(v) for v in value)
    if isinstance(value, str):
        return _text_size(value)
    if isinstance(value, bool):
        return 4
    if isinstance(value, int | float):
        return 8
    return 0


def _text_size(text: str) -> int:
    if text.isascii() and text.isprintable():  # the common case, without a look-up per character
        return len(text)
    return sum(len(ch.encode()) for ch in text if not _is_control(ch))


def strip_system(section: Any) -> Any:
    """Drop read-only $metadata/$version that clients echo back from a twin they read."""
    if isinstance(section, dict):
        return {k: v for k, v in section.items() if k not in SYSTEM_KEYS}
    return section


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return copy.deepcopy(value)


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge-patch: objects merge recursively, null deletes, anything else replaces."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = _without_nulls(value)
    return out


def _touch(meta: dict[str, Any], patch: dict[str, Any], now: str, version: int | None) -> dict[str, Any]:
    out = dict(meta)
    out["$lastUpdated"] = now
    if version is not None:
        out["$lastUpdatedVersion"] = version
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            child = out.get(key) if isinstance(out.get(key), dict) else {}
            out[key] = _touch(child, value, now, version)
        else:
            leaf = {"$lastUpdated": now}
            if version is not None:
                leaf["$lastUpdatedVersion"] = version
            out[key] = leaf
    return out


def _check_size(label: str, old: dict, new: dict, limit: int) -> None:
    """IoT Hub rejects operations that would grow a section past its limit (403, as the service does)."""
    new_size = size_of(new)
    if new_size > limit and new_size > size_of(old):
        raise HubError(403, "DeviceModelMaxPropertiesExceeded", f"'{label}' size should be less than {limit} bytes.")


def _bump(state: dict[str, Any]) -> dict[str, Any]:
    state["version"] += 1
    state["etagSeq"] += 1
    return state


def apply_service_update(
    state: dict[str, Any],
    tags: dict[str, Any] | None,
    desired: dict[str, Any] | None,
    limits: TwinLimits,
    now: str,
    replace: bool,
) -> dict[str, Any]:
    """A back-end update: PATCH merges the given sections, PUT replaces tags and desired outright."""
    new = copy.deepcopy(state)
    if replace:
        new_tags = _without_nulls(tags or {})
        new_desired = _without_nulls(desired or {})
        new["desiredVersion"] += 1
        new["desiredMeta"] = _touch({}, new_desired, now, new["desiredVersion"])
    else:
        new_tags = merge(state["tags"], tags) if tags is not None else state["tags"]
        new_desired = state["desired"]
        if desired is not None:
            new_desired = merge(state["desired"], desired)
            new["desiredVersion"] += 1
            new["desiredMeta"] = _touch(state["desiredMeta"], desired, now, new["desiredVersion"])
    _check_size("Tags", state["tags"], new_tags, limits.tags_bytes)
    _check_size("Properties.Desired", state["desired"], new_desired, limits.desired_bytes)
    new["tags"], new["desired"] = new_tags, new_desired
    return _bump(new)


def apply_reported(state: dict[str, Any], patch: dict[str, Any], limits: TwinLimits, now: str) -> dict[str, Any]:
    """A device's partial update of its reported properties."""
    new = copy.deepcopy(state)
    reported = merge(state["reported"], patch)
    _check_size("Properties.Reported", state["reported"], reported, limits.reported_bytes)
    new["reported"] = reported
    new["reportedVersion"] += 1
    new["reportedMeta"] = _touch(state["reportedMeta"], patch, now, None)
    return _bump(new)


def _same(value: Any, memo: Any = None) -> Any:
    return value


def properties_view(state: dict[str, Any], copies: bool = True) -> dict[str, Any]:
    dc = copy.deepcopy if copies else _same
    return {
        "desired": {
            **dc(state["desired"]),
            "$metadata": dc(state["desiredMeta"]),
            "$version": state["desiredVersion"],
        },
        "reported": {
            **dc(state["reported"]),
            "$metadata": dc(state["reportedMeta"]),
            "$version": state["reportedVersion"],
        },
    }


def device_twin_view(device: dict[str, Any], state: dict[str, Any], copies: bool = True) -> dict[str, Any]:
    """GET /twins/{id}: the twin as IoT Hub returns it (and as queries and Event Grid events show it). copies=False:
    a read-only view that shares the stored values (stored records are replaced, never modified), for a query
    that tests every twin of the hub and returns few."""
    dc = copy.deepcopy if copies else _same
    auth = device.get("authentication") or {}
    view: dict[str, Any] = {
        "deviceId": device["deviceId"],
        "modelId": "",
        "etag": twin_etag(state["etagSeq"]),
        "deviceEtag": device["etag"],
        "status": device["status"],
        "statusReason": device.get("statusReason"),
        "statusUpdateTime": device["statusUpdatedTime"],
        "connectionState": device["connectionState"],
        "lastActivityTime": device["lastActivityTime"],
        "cloudToDeviceMessageCount": device["cloudToDeviceMessageCount"],
        "authenticationType": auth.get("type"),
        "x509Thumbprint": dc(auth.get("x509Thumbprint")),
        "version": state["version"],
    }
    if state["tags"]:
        view["tags"] = dc(state["tags"])
    view["properties"] = properties_view(state, copies)
    view["capabilities"] = dc(device["capabilities"])
    if device.get("deviceScope"):
        view["deviceScope"] = device["deviceScope"]
    if device.get("parentScopes"):
        view["parentScopes"] = list(device["parentScopes"])
    return view


def module_twin_view(device_id: str, module_id: str, module: dict[str, Any], state: dict[str, Any]) -> dict:
    return {
        "deviceId": device_id,
        "moduleId": module_id,
        "etag": twin_etag(state["etagSeq"]),
        "deviceEtag": module["etag"],
        "status": "enabled",
        "connectionState": module["connectionState"],
        "lastActivityTime": module["lastActivityTime"],
        "cloudToDeviceMessageCount": 0,
        "authenticationType": (module.get("authentication") or {}).get("type"),
        "version": state["version"],
        "properties": properties_view(state),
    }
