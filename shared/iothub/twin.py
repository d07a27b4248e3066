"""The neutral twin model: what GET /twins/{id} and twin queries return, as plain data (docs/contracts.md 3).

Feature-specific views (the renewal tag, twin setup's onboarding tag) live in the features and are built from
this. desired and reported come without IoT Hub's system keys ($metadata, $version); the desired $version,
which a device acknowledges when it applies a configuration, is kept apart.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from shared.times import parse_utc

# IoT Hub's lastActivityTime for a device that never connected (the twin and the identity carry it).
NEVER = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


def without_system_keys(section: Any) -> dict[str, Any]:
    """A twin section as read from the hub, without $metadata / $version."""
    if not isinstance(section, dict):
        return {}
    return {k: v for k, v in section.items() if not k.startswith("$")}


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Twin:
    device_id: str
    hub: str
    etag: str | None
    tags: dict[str, Any]
    reported: dict[str, Any]
    desired: dict[str, Any]
    is_edge: bool = False
    status: str | None = None  # enabled | disabled, as the twin reports the identity's status
    desired_version: int | None = field(default=None, compare=False)
    # The device's last connect or message (twin lastActivityTime); None when it never had any.
    last_activity: dt.datetime | None = field(default=None, compare=False)

    @classmethod
    def from_json(cls, hub: str, doc: dict[str, Any]) -> Twin:
        properties = _object(doc.get("properties"))
        desired = _object(properties.get("desired"))
        version = desired.get("$version")
        return cls(
            device_id=str(doc.get("deviceId") or ""),
            hub=hub,
            etag=doc.get("etag"),
            tags=_object(doc.get("tags")),
            reported=without_system_keys(properties.get("reported")),
            desired=without_system_keys(desired),
            is_edge=_object(doc.get("capabilities")).get("iotEdge") is True,
            status=doc.get("status") if isinstance(doc.get("status"), str) else None,
            desired_version=version if isinstance(version, int) else None,
            last_activity=_activity(doc.get("lastActivityTime")),
        )


def _activity(value: Any) -> dt.datetime | None:
    moment = parse_utc(value)
    return None if moment is None or moment <= NEVER else moment


def twin_patch(tags: dict[str, Any] | None = None, desired: dict[str, Any] | None = None) -> dict[str, Any]:
    """The PATCH /twins/{id} body (a JSON merge patch: null deletes) for tags and/or desired properties."""
    patch: dict[str, Any] = {}
    if tags is not None:
        patch["tags"] = tags
    if desired is not None:
        patch["properties"] = {"desired": desired}
    return patch
