"""The allocation decision for one parsed request: attestation, certificate, trust, facility, hub.

No HTTP here and no SQL or SDK calls of its own: the collaborators passed in do the I/O, so the decision can
be explained (allocation.explain) and benchmarked without side effects. Taking the device's place on the chosen
hub is a parameter (`reserve`) for the same reason: the webhook passes `ctx.capacity.reserve`, explain passes a
reservation that takes nothing, and both run these very steps.

When DPS sends no certificate details, the register may stand in for the presented certificate only where that
cannot be wrong (vouched_certificate): the device's one active certificate, and no other unexpired certificate
that the device might be presenting instead and that the CRL check would then wrongly pass.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from allocation.capacity import CapacityMonitor
from allocation.certificate import CertificateDetails, from_register
from allocation.policy import FacilityPlacement, HubChoice, choose_hub
from allocation.request import AllocationRequest
from allocation.settings import RENEWAL_POLICIES
from allocation.trust import IssuingCa, TrustStore
from shared.certificates import CertificateRecord, CertificateStanding
from shared.errors import OnboardingError
from shared.facilities import Facility, FacilityDirectory
from shared.times import iso_utc, utc_now

# without_certificate_during_renewal (ALLOCATION_WITHOUT_CERTIFICATE_DURING_RENEWAL, allocation/settings.py): what
# to do when DPS sends no certificate details and the device, besides its active certificate, holds a superseded one
# that has not expired (the renewal grace, or a device that never installed its new certificate). "allow" takes the
# active one; "refuse" answers superseded_certificate_outstanding. README "Allocation webhook": the residual risk.
FROM_REGISTER = "register"
FROM_REGISTER_DURING_RENEWAL = "register-renewal"  # allowed, with the residual risk: audited as such


@dataclass
class AllocationContext:
    trust: TrustStore
    facilities: FacilityDirectory
    capacity: CapacityMonitor
    # device id -> every certificate on record for it with its revocation reason (allocation/issued.py)
    issued_certificate: Callable[[str], list[CertificateStanding]]
    utilisation_threshold: float
    allow_symmetric_key: bool = False
    without_certificate_during_renewal: str = "allow"  # one of RENEWAL_POLICIES
    now: Callable[[], dt.datetime] = field(default=utc_now)

    def __post_init__(self):
        if self.without_certificate_during_renewal not in RENEWAL_POLICIES:
            raise ValueError(f"without_certificate_during_renewal must be one of {RENEWAL_POLICIES}")


@dataclass(frozen=True)
class Allocation:
    request: AllocationRequest
    certificate: CertificateDetails
    certificate_source: str  # "dps" | "register" | "register-renewal"
    ca: IssuingCa
    facility: Facility
    choice: HubChoice
    validation_ms: float = 0.0  # the certificate's validation (chain to a trusted CA version, CRL): the brief's figure


def standing(entry: CertificateStanding) -> str:
    """active | superseded | revoked. A revocation row wins over the status column (it is written first, and it
    is what the CRL lists); a status this code does not know counts as revoked (fail closed)."""
    if entry.revocation_reason is not None:
        return "superseded" if entry.revocation_reason == "superseded" else "revoked"
    status = entry.record.status
    return status if status in ("active", "superseded") else "revoked"


def _named(records: list[CertificateRecord]) -> str:
    return ", ".join(f"serial {r.serial_number} (to {iso_utc(r.not_after)})" for r in records[:3])


def vouched_certificate(on_record: list[CertificateStanding], now: dt.datetime,
                        during_renewal: str = "allow") -> tuple[CertificateRecord, str]:
    """The certificate on record that may stand in for the one the device presented, and its source; else raise.

    Only unexpired certificates matter (the chain validation DPS does before it calls rejects an expired one: team
    reading, as for the CRL, which drops expired entries). In order: any revoked for cause ->
    revoked_certificate_outstanding (the device may be presenting it, and checking another serial against the
    CRL would pass it); no active one -> certificate_missing; two active (a renewal not yet re-provisioned) -> the
    newest, or certificate_ambiguous when during_renewal refuses; more -> certificate_ambiguous; superseded ones
    beside the active one -> the renewal case, allowed or refused by during_renewal.
    """
    unexpired: dict[str, list[CertificateRecord]] = {"active": [], "superseded": [], "revoked": []}
    for entry in on_record:
        if entry.record.not_after > now:
            unexpired[standing(entry)].append(entry.record)
    if unexpired["revoked"]:
        raise OnboardingError("revoked_certificate_outstanding", f"revoked, unexpired: {_named(unexpired['revoked'])}")
    active = unexpired["active"]
    if not active:
        raise OnboardingError("certificate_missing", "no unexpired active certificate on record")
    if len(active) == 2 and during_renewal == "allow":
        # A renewal between issuance and the device's re-provisioning: the only time a device holds two active
        # certificates (issuance otherwise keeps one per device). Either is the device's own and unrevoked; the
        # renewal completes only once DPS presents the new one (cert_lifecycle/renewal.py), so without DPS's
        # certificate it does not complete, and the old one stays valid until it expires.
        return max(active, key=lambda r: (r.not_before, r.not_after)), FROM_REGISTER_DURING_RENEWAL
    if len(active) > 1:
        raise OnboardingError("certificate_ambiguous", f"active: {_named(active)}")
    if not unexpired["superseded"]:
        return active[0], FROM_REGISTER
    if during_renewal == "refuse":
        raise OnboardingError("superseded_certificate_outstanding",
                              f"superseded, unexpired: {_named(unexpired['superseded'])}")
    return active[0], FROM_REGISTER_DURING_RENEWAL


def resolve_certificate(request: AllocationRequest, ctx: AllocationContext) -> tuple[CertificateDetails, str]:
    if request.attestation != "x509" and not (request.attestation == "symmetricKey" and ctx.allow_symmetric_key):
        raise OnboardingError("attestation_not_supported", f"attestation {request.attestation}")
    if request.certificate is not None:
        if request.certificate.subject_cn != request.registration_id:
            raise OnboardingError("registration_id_mismatch", "certificate CN differs from the registration ID")
        return request.certificate, "dps"
    # No certificate details from DPS: the register stands in only where it cannot be wrong; never unchecked.
    record, source = vouched_certificate(ctx.issued_certificate(request.registration_id), ctx.now(),
                                         ctx.without_certificate_during_renewal)
    return from_register(record), source


def decide(request: AllocationRequest, ctx: AllocationContext, reserve: Callable[[str], bool]) -> Allocation:
    """Every step of the decision; reserve(host) takes the device's place on the chosen hub (False: hub full).

    reserve has no default on purpose: a caller states whether it counts the device (the webhook passes
    ctx.capacity.reserve) or only asks where it would go (allocation.explain passes one that takes nothing).
    """
    certificate, source = resolve_certificate(request, ctx)
    validating = time.perf_counter()
    ca = ctx.trust.check(certificate)
    validation_ms = (time.perf_counter() - validating) * 1000
    facility = ctx.facilities.get(request.identity.facility)
    placement = FacilityPlacement(facility.code, facility.region, facility.preferred_hub)
    choice = place_device(placement, ctx.capacity, request.linked_hubs, request.current_hub,
                          ctx.utilisation_threshold, reserve)
    return Allocation(request, certificate, source, ca, facility, choice, validation_ms)


def place_device(placement: FacilityPlacement, capacity: CapacityMonitor, linked_hubs: list[str],
                 current_hub: str | None, threshold: float,
                 reserve: Callable[[str], bool] | None = None) -> HubChoice:
    """The hub for a device, with its place taken there by reserve (default capacity.reserve); a device staying
    on its current hub takes none."""
    reserve = capacity.reserve if reserve is None else reserve
    hubs = capacity.snapshot()
    for _ in range(len(hubs) + 1):
        try:
            choice = choose_hub(placement, hubs, linked_hubs, current_hub, threshold)
        except OnboardingError as error:
            unknown = sorted(set(getattr(capacity, "unavailable", ())) & set(linked_hubs))
            if error.code == "no_hub_capacity" and unknown:
                # A linked hub was left out only because its statistics did not answer: it may take the device
                # later, so DPS is asked to retry (503), not told no hub can (409, final for DPS).
                raise OnboardingError("dependency_unavailable", f"{error.detail}; statistics unavailable: "
                                                                f"{', '.join(unknown)}") from error
            raise
        if choice.rule == "current" or reserve(choice.host_name):
            return choice
        # Other instances took the last places since the snapshot: that hub is full, choose again without it.
        full = hubs[choice.host_name]
        hubs = {**hubs, choice.host_name: dataclasses.replace(full, device_count=full.max_devices)}
    raise OnboardingError("no_hub_capacity", "every hub with room was filled by concurrent allocations")
