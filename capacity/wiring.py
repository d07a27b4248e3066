"""Builds capacity planning's collaborators once per process from the shared Services (composition root)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

from capacity.service import CapacityPlanner
from capacity.settings import CapacitySettings, capacity_settings
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
    def _lifecycle_settings(self):
        from cert_lifecycle.settings import lifecycle_settings

        return lifecycle_settings(self.svc.settings)

    def queue(self, message: dict) -> None:
        """On the lifecycle's alerts queue (`onboarding alerts` lists it beside the expiry digests)."""
        from cert_lifecycle.alerts import QueueSender

        QueueSender(lambda: self.svc.queue_service).send(self._lifecycle_settings.alerts_queue, message)

    @cached_property
    def email(self):
        """send_content(to, content), or None when Communication Services is not configured."""
        from cert_lifecycle.alerts import EmailSender

        lifecycle = self._lifecycle_settings
        if not lifecycle.email_configured:
            return None
        return EmailSender(lifecycle, lambda: self.svc.credential).send_content


@cache
def capacity() -> Capacity:
    return Capacity(services())
