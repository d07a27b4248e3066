"""Reference data of the local stack: the reference user's 12 plants in three regions, one hub per region."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from shared.facilities import Facility

HUB_MAX_DEVICES = 2000  # the seed's iot_hubs.max_devices per hub, unless a hub says otherwise (the demo's plan)
HUB_MAX_DAILY_MESSAGES = 8_000_000  # four S1 units


@dataclass(frozen=True)
class LocalHub:
    region: str
    name: str  # IoT Hub name, as Event Grid events carry it
    port: int
    max_devices: int = HUB_MAX_DEVICES  # what the seed writes to its iot_hubs row

    @property
    def host_name(self) -> str:
        return f"localhost:{self.port}"


HUBS = [
    LocalHub("west", "iothub-west-local", 8441),
    LocalHub("central", "iothub-central-local", 8442),
    LocalHub("east", "iothub-east-local", 8443),
]
# More hubs per region (`python -m local.stack run --hubs-per-region N`): the first hub of each region keeps its name
# and port above; hub k (k >= 2) of region i is iothub-{region}{k}-local on EXTRA_HUB_PORT + (k - 2) x 3 + i, a range
# of its own past the other emulators (identity 8449, Key Vault 8450, DPS service API 8451).
EXTRA_HUB_PORT = 8460
MAX_HUBS_PER_REGION = 20  # extra hubs on ports 8460-8516


def hubs(per_region: int = 1, max_devices: int = HUB_MAX_DEVICES) -> list[LocalHub]:
    """The stack's hubs with per_region hubs in each region: the first hubs (HUBS), then the others by port; each
    seeded with room for max_devices."""
    if not 1 <= per_region <= MAX_HUBS_PER_REGION:
        raise ValueError(f"hubs per region must be from 1 to {MAX_HUBS_PER_REGION}, got {per_region}")
    if max_devices < 1:
        raise ValueError(f"max_devices must be at least 1, got {max_devices}")
    extra = [LocalHub(first.region, f"iothub-{first.region}{k}-local", EXTRA_HUB_PORT + (k - 2) * len(HUBS) + i)
             for k in range(2, per_region + 1) for i, first in enumerate(HUBS)]
    return [dataclasses.replace(h, max_devices=max_devices) for h in [*HUBS, *extra]]


def region_of(host_name: str) -> str | None:
    """The region of a stack hub by its host name (localhost:PORT), whatever the number of hubs per region."""
    port = int(host_name.rsplit(":", 1)[1]) if ":" in host_name and host_name.rsplit(":", 1)[1].isdigit() else None
    for i, first in enumerate(HUBS):
        extra = port is not None and 0 <= port - EXTRA_HUB_PORT < (MAX_HUBS_PER_REGION - 1) * len(HUBS)
        if port == first.port or (extra and (port - EXTRA_HUB_PORT) % len(HUBS) == i):
            return first.region
    return None


REGIONS = {"west": ["FAC01", "FAC02", "FAC03", "FAC04"],
           "central": ["FAC05", "FAC06", "FAC07", "FAC08"],
           "east": ["FAC09", "FAC10", "FAC11", "FAC12"]}
PLANT_NAMES = {
    "FAC01": "Portland Assembly", "FAC02": "Sacramento Foundry", "FAC03": "Reno Machining",
    "FAC04": "Boise Packaging", "FAC05": "Denver Stamping", "FAC06": "Omaha Coatings",
    "FAC07": "Tulsa Extrusion", "FAC08": "Kansas City Paint", "FAC09": "Columbus Welding",
    "FAC10": "Pittsburgh Casting", "FAC11": "Charlotte Molding", "FAC12": "Albany Finishing",
}


def facilities() -> list[Facility]:
    hub_by_region = {h.region: h.host_name for h in HUBS}
    return [
        Facility(code, PLANT_NAMES[code], region, hub_by_region[region], f"manager.{code.lower()}@example.com",
                 active=True)
        for region, codes in REGIONS.items()
        for code in codes
    ]


# (facility, sensor type or '*', overrides): a few plants that differ from the templates.
OVERRIDES = [
    ("FAC03", "temperature", {"telemetry": {"intervalSeconds": 30}, "alerts": {"high": 70.0}}),
    ("FAC03", "*", {"diagnostics": {"logLevel": "debug"}}),
    ("FAC07", "*", {"firmware": {"channel": "pilot"}}),
    ("FAC07", "vibration", {"alerts": {"velocityRmsWarning": 3.5}, "telemetry": {"sampleRateHz": 6400}}),
    ("FAC11", "pressure", {"alerts": {"high": 1000.0, "spikeThreshold": None}}),
]


def override_rows() -> list[tuple[str, str, str]]:
    return [(f, t, json.dumps(o, sort_keys=True)) for f, t, o in OVERRIDES]


CA_NAMES = {"west": "intermediate-ca-west", "central": "intermediate-ca-central", "east": "intermediate-ca-east"}
CONTAINERS = ["sensor-configurations", "device-configurations"]
QUEUES = ["certificate-renewals", "certificate-alerts", "security-alerts"]
