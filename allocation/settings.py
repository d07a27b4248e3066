"""The allocation webhook's own app settings, read through the shared Settings accessors (validated at first use).

| setting | default | meaning |
|---|---|---|
| CRL_CACHE_TTL_SECONDS | 300 | how often each CA's certificate versions and CRL are read again (a CRL: 304 if same) |
| CRL_GRACE_SECONDS | 0 | how long past nextUpdate a CRL is still trusted (0: not at all) |
| CAPACITY_CACHE_TTL_SECONDS | 60 | how often each hub's registry statistics are read (the registry throttle) |
| HUB_UTILISATION_THRESHOLD | 0.9 | the preferred hub is left for the region's others at this share of its limit |
| ALLOW_SYMMETRIC_KEY_ATTESTATION | false | development only: accept symmetric-key attestation |
| ALLOCATION_WITHOUT_CERTIFICATE_DURING_RENEWAL | allow | allow or refuse a device whose superseded certificate (*) |
| ALLOCATION_DEADLINE_SECONDS | 5 | the webhook answers within this; every outbound call's timeout fits in it (**) |
| FACILITY_CACHE_TTL_SECONDS | 60 | (shared) facility rows are reused this long |
| REGIONAL_CAS, CRL_CONTAINER, SECURITY_ALERTS_QUEUE, STORAGE_* | | (shared) see shared/config.py |

(*) is unexpired when DPS sends no certificate details: the device may be presenting it (README, the residual risk).
(**) docs/contracts.md 1.3: no Microsoft source states DPS's timeout; the team budgets 5 s (AWS's hook limit). What
cannot be decided in time is answered 503 with Retry-After (DPS retries it), never allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import SettingError, Settings

RENEWAL_POLICIES = ("allow", "refuse")


@dataclass(frozen=True)
class AllocationSettings:
    crl_cache_ttl_s: float = 300
    crl_grace_s: float = 0
    capacity_cache_ttl_s: float = 60
    hub_utilisation_threshold: float = 0.9
    allow_symmetric_key: bool = False
    without_certificate_during_renewal: str = "allow"
    deadline_s: float = 5.0


def allocation_settings(settings: Settings) -> AllocationSettings:
    """Read and validate every allocation setting (raises SettingError naming the variable)."""
    threshold = settings.number("HUB_UTILISATION_THRESHOLD", 0.9)
    if threshold > 1:
        raise SettingError(f"app setting HUB_UTILISATION_THRESHOLD must be a fraction <= 1, got {threshold}")
    renewal = (settings.get("ALLOCATION_WITHOUT_CERTIFICATE_DURING_RENEWAL") or "allow").lower()
    if renewal not in RENEWAL_POLICIES:
        raise SettingError(f"app setting ALLOCATION_WITHOUT_CERTIFICATE_DURING_RENEWAL must be one of "
                           f"{', '.join(RENEWAL_POLICIES)}, got {renewal!r}")
    return AllocationSettings(
        crl_cache_ttl_s=settings.number("CRL_CACHE_TTL_SECONDS", 300),
        crl_grace_s=settings.number("CRL_GRACE_SECONDS", 0),
        capacity_cache_ttl_s=settings.number("CAPACITY_CACHE_TTL_SECONDS", 60),
        hub_utilisation_threshold=threshold,
        allow_symmetric_key=settings.flag("ALLOW_SYMMETRIC_KEY_ATTESTATION", False),
        without_certificate_during_renewal=renewal,
        deadline_s=settings.number("ALLOCATION_DEADLINE_SECONDS", 5, minimum=0.5),
    )
