"""Builds the allocation collaborators once per process from the shared Services (composition root).

Every outbound call the webhook makes has a timeout and a retry budget that fit its deadline
(ALLOCATION_DEADLINE_SECONDS, docs/architecture.md "Retries"; DeadlineBudget below), so the webhook's own clients
are built here rather than shared with callers that may wait longer: Key Vault (the CAs' versions), Blob (the
CRLs), SQL (facilities, hub counters, the audit row) and the registry statistics of each hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from allocation.audit import AuditTrail
from allocation.capacity import CapacityMonitor
from allocation.decision import AllocationContext
from allocation.issued import issued_certificate
from allocation.settings import allocation_settings
from allocation.trust import TrustStore
from shared import keyvault, storage
from shared.bootstrap import Services, services
from shared.facilities import FacilityDirectory
from shared.iothub import IotHub
from shared.retry import RetryPolicy
from shared.sql import Database
from shared.storage import BlobStore


@dataclass(frozen=True)
class DeadlineBudget:
    """How the webhook's deadline is shared out (5 s: the figures in brackets).

    A request makes at most: one Key Vault listing (+ one version read) per CA and one CRL read on a first load,
    one statistics read per hub (in parallel) on a capacity refresh, and a few SQL statements. Refreshes after
    the first load are done by one request while the others answer from what is held (shared/cache.py), and
    everything the decision cannot finish before `decide_s` is answered 503 with Retry-After (allocation/service.py).
    """

    deadline_s: float

    @property
    def answer_s(self) -> float:  # when the answer must be on its way (a margin for the host) [4.75]
        return max(0.2, self.deadline_s - min(0.25, self.deadline_s / 10))

    @property
    def decide_s(self) -> float:  # the decision gets this; the audit row the rest [4.0]
        return self.answer_s * 0.85

    @property
    def call_s(self) -> float:  # one socket wait on Key Vault, Blob or IoT Hub [1.25]
        return self.deadline_s / 4

    @property
    def sql_s(self) -> float:  # one SQL statement's lock wait / timeout (SQLite: twice for a write) [0.5]
        return max(0.1, self.deadline_s / 10)

    @property
    def statistics(self) -> RetryPolicy:  # one quick retry of a throttled statistics read [2 attempts in 2 s]
        return RetryPolicy(attempts=2, base_s=0.2, budget_s=self.deadline_s * 0.4)


def budget_for(svc: Services) -> DeadlineBudget:
    return DeadlineBudget(allocation_settings(svc.settings).deadline_s)


@cache
def _database(connection_string: str, timeout_s: float) -> Database:
    return Database(connection_string, timeout_s=timeout_s)


def webhook_database(svc: Services) -> Database:
    """The webhook's own connections, with statement timeouts that fit its deadline."""
    return _database(svc.settings.sql_connection_string, budget_for(svc).sql_s)


def build_context(svc: Services) -> AllocationContext:
    settings, cfg = svc.settings, allocation_settings(svc.settings)
    budget = budget_for(svc)
    database = webhook_database(svc)
    hubs = IotHub(svc.registries, budget.statistics, min(settings.iot_hub_timeout_s, budget.call_s))
    certificates = keyvault.certificate_client(settings, svc.credential, keyvault.deadline_options(budget.call_s))
    blob_service = storage.blob_service(settings, lambda: svc.credential, timeout_s=budget.call_s)
    return AllocationContext(
        trust=TrustStore(settings, certificates,
                         BlobStore.for_container(lambda: blob_service, settings.crl_container)),
        facilities=FacilityDirectory(database, settings.facility_cache_ttl_s, stale_s=settings.facility_cache_ttl_s,
                                     wait_s=budget.decide_s),
        capacity=CapacityMonitor(database, hubs.device_count, settings.iot_hub_host_names,
                                 cfg.capacity_cache_ttl_s, wait_s=budget.decide_s),
        issued_certificate=lambda device_id: issued_certificate(database, device_id),
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
    return AuditTrail(webhook_database(svc), lambda: svc.queue(svc.settings.security_alerts_queue))


@cache
def deadline_budget() -> DeadlineBudget:
    try:
        return budget_for(services())
    except Exception:  # noqa: BLE001 - a bad setting surfaces when the context is built; never unbounded here
        return DeadlineBudget(5)
