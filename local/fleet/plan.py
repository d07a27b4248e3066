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


@dataclass(frozen=True)
class RegionPlan:
    region: str
    devices: int  # the rollout's sensors of the region's plants
    hubs: int
    max_devices: int  # each hub's limit (iot_hubs.max_devices)

    @property
    def limit(self) -> int:
        return self.hubs * self.max_devices

    @property
    def utilisation(self) -> float:
        return self.devices / self.limit


@dataclass(frozen=True)
class HubPlan:
    """The stack a rollout needs: hubs per region (the same in every region, as the stack starts them) and each
    hub's limit, sized as the capacity planner recommends (capacity/projection.py hubs_to_add)."""

    hubs_per_region: int
    max_devices: int
    regions: list[RegionPlan]
    warn_utilisation: float

    def lines(self) -> list[str]:
        head = (f"  {'region':<8} {'sensors':>7} {'hubs':>4} {'per hub':>7} {'max_devices':>11} {'limit':>7} "
                f"{'headroom':>8}")
        rows = [f"  {r.region:<8} {r.devices:>7} {r.hubs:>4} {-(-r.devices // r.hubs):>7} {r.max_devices:>11} "
                f"{r.limit:>7} {r.limit - r.devices:>8} ({1 - r.utilisation:.0%} free; warns at "
                f"{self.warn_utilisation:.0%} used)" for r in self.regions]
        return [f"hub plan (as `onboarding capacity` recommends): {self.hubs_per_region} hub(s) per region, "
                f"max_devices {self.max_devices} each", head, *rows]


def plan_hubs(devices_by_region: dict[str, int], hub_size: int, max_hubs_per_region: int,
              thresholds=None) -> HubPlan:
    """Hubs per region for a rollout, with the capacity planner's headroom: after the rollout (its sensors placed,
    no growth yet) every region stays below the warning share of its limit. Hubs keep hub_size (the seed's limit),
    unless a region would need more than max_hubs_per_region of them: then the hubs grow (in steps of 500) instead."""
    from capacity.projection import Thresholds, hubs_to_add

    thresholds = thresholds or Thresholds()
    per_region = 1
    for devices in devices_by_region.values():
        per_region = max(per_region, hubs_to_add(devices, 0, 0.0, hub_size, thresholds) or 1)
    if per_region > max_hubs_per_region:
        busiest = max(devices_by_region.values())
        hub_size = -(-int(busiest / thresholds.warn_utilisation / max_hubs_per_region + 1) // 500) * 500
        per_region = max(hubs_to_add(d, 0, 0.0, hub_size, thresholds) or 1 for d in devices_by_region.values())
    regions = [RegionPlan(region, devices, per_region, hub_size) for region, devices in sorted(
        devices_by_region.items())]
    return HubPlan(per_region, hub_size, regions, thresholds.warn_utilisation)
