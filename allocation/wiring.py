"""Builds the allocation collaborators once per process from the shared Services (composition root)."""

from __future__ import annotations

from functools import cache

from allocation.audit import AuditTrail
from allocation.capacity import CapacityMonitor
from allocation.decision import AllocationContext
from allocation.issued import issued_certificate
from allocation.trust import TrustStore
from shared.bootstrap import Services, services
from shared.facilities import FacilityDirectory


def build_context(svc: Services) -> AllocationContext:
    settings = svc.settings

    def device_count(host_name: str) -> int:
        return int(svc.registry_manager(host_name).get_device_registry_statistics().total_device_count)

    return AllocationContext(
        trust=TrustStore(settings, svc.certificates, svc.secrets),
        facilities=FacilityDirectory(svc.database, settings.facility_cache_ttl_s),
        capacity=CapacityMonitor(svc.database, device_count, settings.iot_hub_host_names,
                                 settings.capacity_cache_ttl_s),
        issued_certificate=lambda device_id: issued_certificate(svc.database, device_id),
        utilisation_threshold=settings.hub_utilisation_threshold,
        allow_symmetric_key=settings.allow_symmetric_key,
    )


@cache
def allocation_context() -> AllocationContext:
    return build_context(services())


@cache
def audit_trail() -> AuditTrail:
    svc = services()
    return AuditTrail(svc.database, lambda: svc.queue(svc.settings.security_alerts_queue))
