"""Device identity: the CN / registration ID `sensor-{type}-{facility}-{serial}`.

The parser is the first gate: nothing from a CN reaches SQL, a Blob name or a log line unvalidated. It is
strict (anchored, ASCII only, bounded lengths) and the sensor type table is data, so a new type is one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import OnboardingError

# type code -> template name (sensor-configurations/{template}-sensor.json)
SENSOR_TYPES: dict[str, str] = {
    "temp": "temperature",
    "press": "pressure",
    "vib": "vibration",
    "flow": "flow",
    "gw": "gateway",
}

MAX_ID_LENGTH = 128  # DPS registration IDs: at most 128 characters
_CN_PATTERN = re.compile(r"sensor-([a-z]{2,8})-([A-Z][A-Z0-9]{1,15})-([A-Za-z0-9]{1,32})", re.ASCII)


@dataclass(frozen=True)
class DeviceIdentity:
    type_code: str
    template: str
    facility: str
    serial: str

    @property
    def device_id(self) -> str:
        return format_device_id(self.type_code, self.facility, self.serial)


def format_device_id(type_code: str, facility: str, serial: str) -> str:
    return f"sensor-{type_code}-{facility}-{serial}"


def parse_device_id(value: object, sensor_types: dict[str, str] = SENSOR_TYPES) -> DeviceIdentity:
    """Parse a CN or registration ID; raise OnboardingError with a catalogue code when it is not one."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise OnboardingError("invalid_registration_id", "empty, not a string, or too long")
    match = _CN_PATTERN.fullmatch(value)
    if match is None:
        raise OnboardingError("invalid_registration_id")
    type_code, facility, serial = match.groups()
    if type_code not in sensor_types:
        raise OnboardingError("unknown_sensor_type", f"type code {type_code!r}")
    return DeviceIdentity(type_code, sensor_types[type_code], facility, serial)
