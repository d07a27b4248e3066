"""Which sensors a rollout installs: deterministic for a seed, mixed types, a few gateways per plant. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.identity import format_device_id

SENSOR_MIX = [("temp", 0.35), ("press", 0.25), ("vib", 0.25), ("flow", 0.15)]


@dataclass(frozen=True)
class PlannedDevice:
    device_id: str
    facility: str
    type_code: str

    @property
    def is_gateway(self) -> bool:
        return self.type_code == "gw"


def plan_fleet(facilities: list[str], per_facility: int, seed: int, gateways_per_facility: int = 2
               ) -> list[PlannedDevice]:
    """per_facility devices for each facility, of which gateways_per_facility are gateways."""
    rng = random.Random(seed)
    codes, weights = zip(*SENSOR_MIX, strict=True)
    devices = []
    serials: set[str] = set()
    for facility in facilities:
        gateways = min(gateways_per_facility, per_facility)
        for index in range(per_facility):
            type_code = "gw" if index < gateways else rng.choices(codes, weights)[0]
            serial = f"SN{rng.randrange(10**8):08d}"
            while serial in serials:
                serial = f"SN{rng.randrange(10**8):08d}"
            serials.add(serial)
            devices.append(PlannedDevice(format_device_id(type_code, facility, serial), facility, type_code))
    rng.shuffle(devices)  # sensors are powered on plant-wide, not one facility after another
    return devices
