"""Builds capacity planning's collaborators once per process from the shared Services (composition root)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

from capacity.service import CapacityPlanner
from capacity.settings import CapacitySettings, capacity_settings
from cert_lifecycle.alerts import AlertChannel, alert_channel
from shared.bootstrap import Services, services
from shared.retry import RetryPolicy

# A daily timer has no tight deadline: a throttled statistics read waits out its Retry-After for up to a minute.
HUB_RETRY = RetryPolicy(attempts=5, base_s=0.5, budget_s=60)


@dataclass
class Capacity:
    svc: Services

    @cached_property
    def settings(self) -> CapacitySettings:
        return capacity_settings(self.svc.settings)

    @cached_property
    def planner(self) -> CapacityPlanner:
        hubs = self.svc.iothub(HUB_RETRY)
        return CapacityPlanner(self.svc.database, hubs.device_count, self.svc.settings.iot_hub_host_names,
                               self.settings)

    @cached_property
    def alerts(self) -> AlertChannel:
        """The operators' alerts queue (`onboarding alerts`) and e-mail when configured."""
        return alert_channel(self.svc)


@cache
def capacity() -> Capacity:
    return Capacity(services())
