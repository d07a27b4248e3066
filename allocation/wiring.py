"""Builds the allocation collaborators once per process from the shared Services (composition root)."""

from __future__ import annotations

from functools import cache

from allocation.audit import AuditTrail
from allocation.capacity import CapacityMonitor
from allocation.decision import AllocationContext
from allocation.issued import issued_certificate
from allocation.settings import allocation_settings
from allocation.trust import TrustStore
from shared.bootstrap import Services, services
from shared.facilities import FacilityDirectory
from shared.retry import RetryPolicy
from shared.storage import BlobStore

# The webhook answers DPS within seconds: one quick retry of a throttled statistics read, then the hub is
# left out of this decision (capacity.py) rather than holding the allocation.
STATISTICS_RETRY = RetryPolicy(attempts=2, base_s=0.2, budget_s=2)


def build_context(svc: Services) -> AllocationContext:
    settings, cfg = svc.settings, allocation_settings(svc.settings)
    hubs = svc.iothub(STATISTICS_RETRY)
    return AllocationContext(
        trust=TrustStore(settings, svc.certificates,
                         BlobStore.for_container(lambda: svc.blob_service, settings.crl_container)),
        facilities=FacilityDirectory(svc.database, settings.facility_cache_ttl_s),
        capacity=CapacityMonitor(svc.database, hubs.device_count, settings.iot_hub_host_names,
                                 cfg.capacity_cache_ttl_s),
        issued_certificate=lambda device_id: issued_certificate(svc.database, device_id),
        utilisation_threshold=cfg.hub_utilisation_threshold,
        allow_symmetric_key=cfg.allow_symmetric_key,
        without_certificate_during_renewal=cfg.without_certificate_during_renewal,
    )


@cache
def allocation_context() -> AllocationContext:
    return build_context(services())


@cache
def audit_trail() -> AuditTrail:
    svc = services()
    return AuditTrail(svc.database, lambda: svc.queue(svc.settings.security_alerts_queue))
