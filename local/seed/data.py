"""Reference data of the local stack: the reference user's 12 plants in three regions, one hub per region."""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared.facilities import Facility


@dataclass(frozen=True)
class LocalHub:
    region: str
    name: str  # IoT Hub name, as Event Grid events carry it
    port: int

    @property
    def host_name(self) -> str:
        return f"localhost:{self.port}"


HUBS = [
    LocalHub("west", "iothub-west-local", 8441),
    LocalHub("central", "iothub-central-local", 8442),
    LocalHub("east", "iothub-east-local", 8443),
]
HUB_MAX_DEVICES = 2000
HUB_MAX_DAILY_MESSAGES = 8_000_000  # four S1 units

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
