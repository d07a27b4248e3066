"""The allocation decision for one parsed request: attestation, certificate, trust, facility, hub.

No HTTP here and no SQL or SDK calls of its own: the collaborators passed in do the I/O, so the decision can
be explained (allocation.explain) and benchmarked without side effects. Taking the device's place on the chosen
hub is a parameter (`reserve`) for the same reason: the webhook passes `ctx.capacity.reserve`, explain passes a
reservation that takes nothing, and both run these very steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from allocation.capacity import CapacityMonitor
from allocation.certificate import CertificateDetails
from allocation.policy import FacilityPlacement, HubChoice, choose_hub
from allocation.request import AllocationRequest
from allocation.trust import IssuingCa, TrustStore
from shared.errors import OnboardingError
from shared.facilities import Facility, FacilityDirectory


@dataclass
class AllocationContext:
    trust: TrustStore
    facilities: FacilityDirectory
    capacity: CapacityMonitor
    issued_certificate: Callable[[str], CertificateDetails | None]  # device id -> active certificate on record
    utilisation_threshold: float
    allow_symmetric_key: bool = False


@dataclass(frozen=True)
class Allocation:
    request: AllocationRequest
    certificate: CertificateDetails
    certificate_source: str  # "dps" | "register"
    ca: IssuingCa
    facility: Facility
    choice: HubChoice


def resolve_certificate(request: AllocationRequest, ctx: AllocationContext) -> tuple[CertificateDetails, str]:
    if request.attestation != "x509" and not (request.attestation == "symmetricKey" and ctx.allow_symmetric_key):
        raise OnboardingError("attestation_not_supported", f"attestation {request.attestation}")
    if request.certificate is not None:
        if request.certificate.subject_cn != request.registration_id:
            raise OnboardingError("registration_id_mismatch", "certificate CN differs from the registration ID")
        return request.certificate, "dps"
    # No certificate details from DPS: fall back to what this product issued for the CN; never allocate unchecked.
    on_record = ctx.issued_certificate(request.registration_id)
    if on_record is None:
        raise OnboardingError("certificate_missing")
    return on_record, "register"


def decide(request: AllocationRequest, ctx: AllocationContext, reserve: Callable[[str], bool]) -> Allocation:
    """Every step of the decision; reserve(host) takes the device's place on the chosen hub (False: hub full).

    reserve has no default on purpose: a caller states whether it counts the device (the webhook passes
    ctx.capacity.reserve) or only asks where it would go (allocation.explain passes one that takes nothing).
    """
    certificate, source = resolve_certificate(request, ctx)
    ca = ctx.trust.check(certificate)
    facility = ctx.facilities.get(request.identity.facility)
    placement = FacilityPlacement(facility.code, facility.region, facility.preferred_hub)
    choice = place_device(placement, ctx.capacity, request.linked_hubs, request.current_hub,
                          ctx.utilisation_threshold, reserve)
    return Allocation(request, certificate, source, ca, facility, choice)


def place_device(placement: FacilityPlacement, capacity: CapacityMonitor, linked_hubs: list[str],
                 current_hub: str | None, threshold: float,
                 reserve: Callable[[str], bool] | None = None) -> HubChoice:
    """The hub for a device, with its place taken there by reserve (default capacity.reserve); a device staying
    on its current hub takes none."""
    reserve = capacity.reserve if reserve is None else reserve
    hubs = capacity.snapshot()
    for _ in range(len(hubs) + 1):
        choice = choose_hub(placement, hubs, linked_hubs, current_hub, threshold)
        if choice.rule == "current" or reserve(choice.host_name):
            return choice
        # Other instances took the last places since the snapshot: that hub is full, choose again without it.
        full = hubs[choice.host_name]
        hubs = {**hubs, choice.host_name: dataclasses.replace(full, device_count=full.max_devices)}
    raise OnboardingError("no_hub_capacity", "every hub with room was filled by concurrent allocations")
