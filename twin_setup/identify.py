"""Which sensor is this twin? From the tags the allocation webhook stamped, else from the device ID. Pure.

Tag values come from the hub, so they go through the same strict CN parser as a registration ID before any of
them reaches SQL or a Blob name: the tags are formatted back into `sensor-{type}-{facility}-{serial}` and
parsed. When the tags and the device ID both name a sensor and disagree, the tags win (they were written
from the verified certificate) and the disagreement is reported to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.errors import OnboardingError
from shared.identity import SENSOR_TYPES, DeviceIdentity, parse_device_id
from shared.tags import allocated_by_us, identity_from_tags

SENSOR_PREFIX = "sensor-"


@dataclass(frozen=True)
class Identified:
    identity: DeviceIdentity
    source: str  # "tags" or "deviceId"
    mismatch: bool = False  # tags and device ID name different sensors


def looks_like_ours(tags: dict[str, Any], device_id: str) -> bool:
    """True when the twin was stamped by the allocation webhook or the ID follows the sensor pattern."""
    return allocated_by_us(tags) or device_id.startswith(SENSOR_PREFIX)


def identify(tags: Any, device_id: str, sensor_types: dict[str, str] = SENSOR_TYPES) -> Identified:
    """The sensor's identity; OnboardingError (invalid_registration_id, unknown_sensor_type) if there is none."""
    tags = tags if isinstance(tags, dict) else {}
    tagged = identity_from_tags(tags, sensor_types)
    if tagged is None:
        return Identified(parse_device_id(device_id, sensor_types), "deviceId")
    try:
        parsed = parse_device_id(device_id, sensor_types)
    except OnboardingError:
        parsed = None
    return Identified(tagged, "tags", mismatch=parsed is not None and parsed != tagged)
