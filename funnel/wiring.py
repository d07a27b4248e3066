"""Builds the funnel's collaborators once per process from the shared Services (composition root)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

from cert_lifecycle.alerts import AlertChannel, alert_channel
from funnel.records import DigestLedger
from funnel.service import Reconciler
from funnel.settings import FunnelSettings, funnel_settings
from shared.audit import AuditWriter
from shared.bootstrap import Services, services
from shared.facilities import FacilityDirectory
from shared.retry import RetryPolicy

# A timer run has no caller waiting, but the next run comes in 30 s: a throttled query waits out a short budget.
HUB_RETRY = RetryPolicy(attempts=3, base_s=0.5, budget_s=20)


@dataclass
class Funnel:
    svc: Services

    @cached_property
    def settings(self) -> FunnelSettings:
        return funnel_settings(self.svc.settings)

    @cached_property
    def alerts(self) -> AlertChannel:
        """The operators' alerts queue (`onboarding alerts`) and e-mail when configured."""
        return alert_channel(self.svc)

    @cached_property
    def reconciler(self) -> Reconciler:
        facilities = FacilityDirectory(self.svc.database, ttl_s=300)
        return Reconciler(self.settings, self.svc.iothub(HUB_RETRY), self.svc.settings.iot_hub_host_names,
                          AuditWriter(self.svc.database), DigestLedger(self.svc.database), facilities.find,
                          self.alerts.queue, self.alerts.email)


@cache
def funnel() -> Funnel:
    return Funnel(services())
