"""The allocation policy: which linked hub a device joins. Pure: plain data in, a decision out.

Order of preference (docs/contracts.md 1, docs/architecture.md):
1. on re-provisioning, the device's current hub while it is linked, accepting and in the facility's region;
2. the facility's preferred hub while linked, accepting and below the utilisation threshold;
3. the least-utilised linked, accepting, not-full hub in the facility's region;
4. the least-utilised linked, accepting, not-full hub anywhere (tagged crossRegion);
5. otherwise refuse with no_hub_capacity.
Ties break on host name, so the same inputs always give the same hub.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.errors import OnboardingError

POLICY_VERSION = "2026-11.1"


@dataclass(frozen=True)
class HubLoad:
    host_name: str
    region: str
    accepting: bool
    device_count: int
    max_devices: int
    daily_messages: int | None = None  # None when the hub does not report it
    max_daily_messages: int | None = None

    @property
    def utilisation(self) -> float:
        """The tighter of device and message utilisation, 0..1+."""
        used = self.device_count / self.max_devices if self.max_devices > 0 else 1.0
        if self.daily_messages is not None and self.max_daily_messages:
            used = max(used, self.daily_messages / self.max_daily_messages)
        return used

    @property
    def full(self) -> bool:
        return self.utilisation >= 1.0


@dataclass(frozen=True)
class FacilityPlacement:
    code: str
    region: str
    preferred_hub: str


@dataclass(frozen=True)
class HubChoice:
    host_name: str
    rule: str  # current | preferred | region | cross_region
    cross_region: bool
    utilisation: float
    region: str


def choose_hub(
    facility: FacilityPlacement,
    hubs: Mapping[str, HubLoad],
    linked_hubs: Iterable[str],
    current_hub: str | None = None,
    threshold: float = 0.9,
) -> HubChoice:
    """Pick the hub for a device of facility among linked_hubs; raise no_hub_capacity when none fits."""
    linked = [hubs[h] for h in dict.fromkeys(linked_hubs) if h in hubs]  # unknown hubs have no limits: skip
    candidates = [h for h in linked if h.accepting]

    if current_hub:
        current = next((h for h in candidates if h.host_name == current_hub), None)
        if current is not None and current.region == facility.region:
            return HubChoice(current.host_name, "current", False, current.utilisation, current.region)

    preferred = next((h for h in candidates if h.host_name == facility.preferred_hub), None)
    if preferred is not None and preferred.utilisation < threshold:
        return HubChoice(preferred.host_name, "preferred", preferred.region != facility.region,
                         preferred.utilisation, preferred.region)

    open_hubs = sorted((h for h in candidates if not h.full), key=lambda h: (h.utilisation, h.host_name))
    in_region = [h for h in open_hubs if h.region == facility.region]
    if in_region:
        return HubChoice(in_region[0].host_name, "region", False, in_region[0].utilisation, in_region[0].region)
    if open_hubs:
        return HubChoice(open_hubs[0].host_name, "cross_region", True, open_hubs[0].utilisation, open_hubs[0].region)
    raise OnboardingError(
        "no_hub_capacity",
        f"{len(linked)} linked hub(s) known, {len(candidates)} accepting, none below capacity",
    )
