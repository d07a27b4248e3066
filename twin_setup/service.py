"""Configure one device's twin for a DeviceCreated event: the orchestration, with every dependency injected.

    resolve hub -> read twin (registry, not the event) -> identify -> template + overrides -> merge
    -> plan (pure) -> [Blob for oversized] -> [edge deployment] -> PATCH with If-Match -> telemetry

Idempotent and safe under at-least-once, out-of-order delivery:
- the twin's tags record the configuration hash; a twin that already carries it is not written again;
- the PATCH is conditional on the etag read; a 412 re-reads the twin and plans again (bounded rounds);
- deliveries for the same device inside one worker are serialised, so duplicates arriving together cost one
  write, not a write and a 412 each;
- a device that is gone (deleted before or while this runs) is left alone: IoT Hub's PATCH never creates one.
Failures: transient ones (429/5xx/timeouts; Storage or SQL down) are retried within the event's budget and
then raised, so the invocation fails and Event Grid redelivers. Permanent ones (unknown template, invalid
template or override, unknown facility, a refused update) are recorded on the twin, audited, emitted, and the
event is acknowledged: redelivering it could not help.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from shared import telemetry, times
from shared.audit import AuditWriter
from shared.errors import OnboardingError
from shared.identity import DeviceIdentity
from shared.iothub import (
    DeviceGone,
    HubAccessDenied,
    HubRefused,
    HubResolver,
    IotHub,
    PreconditionFailed,
    UnknownHub,
)
from shared.retry import RetryBudget, TransientError
from twin_setup.configuration import Configuration, Template, build_configuration
from twin_setup.events import LifecycleEvent
from twin_setup.identify import identify, looks_like_ours
from twin_setup.offload import ConfigurationLinks
from twin_setup.overrides import OverrideStore
from twin_setup.plan import Plan, TwinView, plan_configuration, plan_failure
from twin_setup.records import ConfigurationStore
from twin_setup.settings import TwinSetupSettings
from twin_setup.templates import TemplateStore

log = logging.getLogger(__name__)


def utc_now() -> str:
    return times.iso_utc(times.utc_now())


@dataclass
class Outcome:
    outcome: str  # configured | unchanged | failed | deviceGone | ignored
    device_id: str | None = None
    hub: str | None = None
    reason_code: str | None = None
    facility: str | None = None
    template: str | None = None
    template_version: str | None = None
    configuration_hash: str | None = None
    storage: str | None = None
    desired_bytes: int | None = None
    edge: bool = False
    recorded: bool = False  # a failure was written to the twin
    conflicts: int = 0  # 412 rounds
    retries: int = 0  # transient retries

    def telemetry_fields(self) -> dict[str, Any]:
        names = {"device_id": "deviceId", "reason_code": "reasonCode", "template_version": "templateVersion",
                 "configuration_hash": "configurationHash", "desired_bytes": "bytes"}
        return {names.get(k, k): v for k, v in asdict(self).items()}


class EdgeRefused(HubRefused):
    """IoT Hub refused the edge deployment (applyConfigurationContent), not the twin update."""


class DeviceLocks:
    """One lock per (hub, device) while someone holds it; entries are dropped when released."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], list] = {}  # key -> [lock, holders]

    @contextmanager
    def hold(self, key: tuple[str, str]) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


class TwinSetup:
    def __init__(self, settings: TwinSetupSettings, resolver: HubResolver, hub: IotHub,
                 templates: TemplateStore, overrides: OverrideStore, configurations: ConfigurationStore,
                 audit: AuditWriter, now: Callable[[], str] = utc_now,
                 sleep: Callable[[float], None] = time.sleep, links: ConfigurationLinks | None = None):
        self.settings = settings
        self.resolver = resolver
        self.hub = hub
        self.templates = templates
        self.overrides = overrides
        self.configurations = configurations
        self.audit = audit
        self._now = now
        self._sleep = sleep
        self._locks = DeviceLocks()
        self.links = links  # signs the read-only link of an offloaded configuration; None: the bare blob URL

    # -- entry point ---------------------------------------------------------------------------------------
    def handle(self, event: LifecycleEvent) -> Outcome:
        """Configure the device of a DeviceCreated event; other event types are acknowledged and ignored.
        Raises TransientError / HubAccessDenied / UnknownHub when the event must be redelivered."""
        if not event.is_device_created:
            log.debug("event %s of type %s ignored", event.id, event.event_type)
            return Outcome("ignored")
        started = time.perf_counter()
        device_id, fields = event.device_id or "", {"eventId": event.id, "schema": event.schema}
        try:
            host = self.resolver.resolve(event.hub_name or "")
            budget = RetryBudget(self.settings.retry, sleep=self._sleep)
            with self._locks.hold((host, device_id)):
                outcome = self._configure(host, device_id, budget, created_at=_event_time(event.event_time))
            outcome.retries = budget.retries
        except TransientError as exc:
            self._emit(started, Outcome("retry", device_id, reason_code="dependency_unavailable"), fields,
                       error=exc.reason)
            raise
        except (HubAccessDenied, UnknownHub) as exc:
            self._emit(started, Outcome("retry", device_id, reason_code="configuration_error"), fields,
                       error=str(exc))
            log.error("twin setup for %s cannot proceed: %s", device_id, exc)
            raise
        except Exception as exc:
            self._emit(started, Outcome("retry", device_id, reason_code="internal_error"), fields,
                       error=type(exc).__name__)
            raise
        self._emit(started, outcome, fields)
        return outcome

    def reconfigure(self, host: str, device_id: str, template: Template | None = None,
                    budget: RetryBudget | None = None, force: bool = False) -> Outcome:
        """Configure an installed sensor again (a rollout's write): the same read, plan and conditional PATCH as
        for DeviceCreated, with `template` pinned (the version the rollout carries, not whatever the cache holds).
        force: write even when the tags carry the configuration's hash (the drift check found its desired
        properties edited on the hub). Raises like handle() when the caller should try again later."""
        budget = budget or RetryBudget(self.settings.retry, sleep=self._sleep)
        started = time.perf_counter()
        with self._locks.hold((host, device_id)):
            outcome = self._configure(host, device_id, budget, template, force=force)
        outcome.retries = budget.retries
        self._emit(started, outcome, {"trigger": "rollout"})
        return outcome

    def configuration_for(self, identity: DeviceIdentity, template: Template | None = None) -> Configuration:
        if template is None or template.name != identity.template:
            template = self.templates.get(identity.template)
        overrides = self.overrides.for_device(identity.facility, identity.template)
        return build_configuration(identity, template, overrides, self.settings.limits)

    # -- the work ------------------------------------------------------------------------------------------
    def _read(self, host: str, device_id: str, budget: RetryBudget) -> TwinView | None:
        found = self.hub.get_twin(host, device_id, budget)
        return TwinView.of(found) if found is not None else None

    def _configure(self, host: str, device_id: str, budget: RetryBudget, template: Template | None = None,
                   created_at: str | None = None, force: bool = False) -> Outcome:
        conflicts = 0
        twin = self._read(host, device_id, budget)
        while True:
            if twin is None:
                return Outcome("deviceGone", device_id, host, conflicts=conflicts)
            try:
                identified = identify(twin.tags, device_id)
            except OnboardingError as err:
                if not looks_like_ours(twin.tags, device_id):
                    log.info("device %s is not an onboarded sensor (%s): left alone", device_id, err.code)
                    return Outcome("ignored", device_id, host, reason_code=err.code)
                return self._fail(host, device_id, twin, err, budget, None)
            if identified.mismatch:
                log.warning("device %s: tags name %s; using the tags", device_id, identified.identity.device_id)
            identity = identified.identity
            try:
                config = self.configuration_for(identity, template)
                url = self.configurations.url(device_id, config.hash)
                plan = plan_configuration(twin, config, self.settings.limits, self.settings.essential_sections,
                                          url, self._now(), created_at, force=force)
                if plan.storage == "blob" and self.links is not None:
                    # Signed only when the configuration goes to Blob, then planned again: the link is longer.
                    link = self.links.for_configuration(device_id, config.hash)
                    plan = plan_configuration(twin, config, self.settings.limits, self.settings.essential_sections,
                                              link.url, self._now(), created_at, force=force,
                                              url_expires_at=link.expires_at)
            except OnboardingError as err:
                return self._fail(host, device_id, twin, err, budget, identity)
            outcome = Outcome("unchanged", device_id, host, facility=identity.facility, template=config.template_name,
                              template_version=config.template_version, configuration_hash=config.hash,
                              edge=config.edge is not None, conflicts=conflicts)
            if plan.action == "unchanged":
                return outcome
            outcome.storage, outcome.desired_bytes = plan.storage, plan.desired_bytes
            try:
                self._write(host, device_id, twin, config, plan, budget)
            except PreconditionFailed:
                conflicts += 1
                if conflicts >= self.settings.conflict_attempts:
                    raise TransientError(f"twin of {device_id} changed {conflicts} times while configuring") \
                        from None
                twin = self._read(host, device_id, budget)
                continue
            except DeviceGone:
                if plan.blob is not None:
                    self.configurations.delete(device_id, config.hash)
                return Outcome("deviceGone", device_id, host, facility=identity.facility, conflicts=conflicts)
            except HubRefused as refused:
                code = "edge_deployment_failed" if isinstance(refused, EdgeRefused) else "twin_update_rejected"
                err = OnboardingError(code, f"{refused.status} {refused.error_code}: {refused.message}"[:300])
                return self._fail(host, device_id, twin, err, budget, identity)
            outcome.outcome = "configured"
            return outcome

    def _write(self, host: str, device_id: str, twin: TwinView, config: Configuration, plan: Plan,
               budget: RetryBudget) -> None:
        if plan.blob is not None:
            budget.run(lambda: self.configurations.put(device_id, config.hash, plan.blob),
                       f"write configuration of {device_id}")
        if plan.apply_edge:
            try:
                self.hub.apply_edge(host, device_id, config.edge, budget)
            except HubRefused as refused:
                raise EdgeRefused(refused.status, refused.error_code, refused.message) from refused
        self.hub.update_twin(host, device_id, plan.patch, twin.etag, budget)

    def _fail(self, host: str, device_id: str, twin: TwinView, err: OnboardingError, budget: RetryBudget,
              identity: DeviceIdentity | None) -> Outcome:
        """Record a permanent failure on the twin (If-Match, re-read on 412), audit it, acknowledge the event."""
        outcome = Outcome("failed", device_id, host, reason_code=err.code,
                          facility=identity.facility if identity else None,
                          template=identity.template if identity else None)
        log.warning("twin setup for %s failed permanently: %s", device_id, err)
        for _ in range(self.settings.conflict_attempts):
            patch = plan_failure(twin, err.code, err.detail, self._now())
            if patch is None:
                return outcome  # already recorded (a redelivery), or the twin is configured: nothing to add
            try:
                self.hub.update_twin(host, device_id, patch, twin.etag, budget)
                outcome.recorded = True
                break
            except PreconditionFailed:
                outcome.conflicts += 1
                twin = self._read(host, device_id, budget)
                if twin is None:
                    return Outcome("deviceGone", device_id, host)
            except DeviceGone:
                return Outcome("deviceGone", device_id, host)
            except HubRefused as refused:
                log.error("could not record the failure on %s: %s", device_id, refused)
                break
        # outcome 'error': a permanent twin setup failure (a configuration is recorded on the twin and in telemetry)
        self.audit.provisioning(device_id, "error", err.code, host, {
            "stage": "twinSetup", "detail": err.detail, "recordedOnTwin": outcome.recorded,
            "facility": outcome.facility, "template": outcome.template})
        return outcome

    def _emit(self, started: float, outcome: Outcome, fields: dict[str, Any], **extra: Any) -> None:
        telemetry.emit("twin_setup", (time.perf_counter() - started) * 1000, **outcome.telemetry_fields(),
                       **fields, **extra)


def _event_time(value: str | None) -> str | None:
    """The DeviceCreated event's time as the tags write times (ISO-8601 UTC, seconds); None when unreadable."""
    moment = times.parse_utc(value)
    return times.iso_utc(moment) if moment is not None else None
