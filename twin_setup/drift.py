"""Configuration drift: installed sensors whose twin no longer carries what template (+) overrides give today.

    timer check_config_drift (hourly) / `onboarding templates drift [--apply]`
      -> per hub: twin query of the configured sensors (filtered server-side, paged: one query per page)
      -> per sensor: expected configuration from today's sources (twin setup's own merge) -> compare (pure, below)
      -> sensors of a running or halted rollout are left to it (held): a halted canary must not be overruled
      -> re-apply through TwinSetup.reconfigure (the one writer), when DRIFT_ACTION=reapply and the run may write
      -> telemetry per facility and type (config_drift), an audit row per re-applied sensor, the run's record

Kinds of drift (compare):
- missed: the configuration hash in the tags is not the one today's sources give (a BlobCreated event or an
  override change the sensor never got, a rollout that failed on it);
- edited: the hash is right but the desired properties are not what twin setup wrote (a manual edit on the hub);
  re-applied with force, since the hash alone would say "unchanged";
- unacknowledged: the sensor reports another configuration hash than the one desired, longer than
  DRIFT_ACK_GRACE_SECONDS after it was written (reported only: writing again cannot make a device apply it).
Sensors whose configuration cannot be built today (unknown facility, an override that no longer validates) are
counted as errors, not drift: `onboarding explain` says why.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from shared import telemetry, times
from shared.config import SettingError, Settings
from shared.errors import OnboardingError
from shared.identity import SENSOR_TYPES
from shared.iothub import HubAccessDenied, HubRefused, Twin
from shared.retry import RetryBudget, RetryPolicy, RunBudget, TransientError
from twin_setup.changes import fleet_conditions
from twin_setup.configuration import CONFIG_SECTIONS, Configuration
from twin_setup.diff import Sources
from twin_setup.identify import identify
from twin_setup.plan import CONFIGURED, TwinView
from twin_setup.rollout import HALTED, RUNNING, Pacer

log = logging.getLogger(__name__)

MISSED, EDITED, UNACKNOWLEDGED = "missed", "edited", "unacknowledged"
REAPPLY, REPORT = "reapply", "report"
# Every hour, at minute 17 (away from the top of the hour, when other schedules fire). NCRONTAB with seconds.
SCHEDULE = "0 17 * * * *"


@dataclass(frozen=True)
class DriftSettings:
    action: str = REAPPLY  # reapply | report: the template is the compliance source, so re-apply by default
    ack_grace_s: float = 3600.0
    max_writes: int = 2000  # re-applied per run at most; the rest in the next run
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=5, base_s=1.0, budget_s=60.0))


def load_settings(settings: Settings) -> DriftSettings:
    """DRIFT_ACTION (reapply | report), DRIFT_ACK_GRACE_SECONDS, DRIFT_MAX_WRITES, DRIFT_RETRY_BUDGET_SECONDS."""
    action = (settings.get("DRIFT_ACTION", REAPPLY) or REAPPLY).strip().lower()
    if action not in (REAPPLY, REPORT):
        raise SettingError(f"app setting DRIFT_ACTION must be {REAPPLY} or {REPORT}, got {action[:20]!r}")
    max_writes = settings.number("DRIFT_MAX_WRITES", 2000, 0)
    return DriftSettings(action=action, ack_grace_s=settings.number("DRIFT_ACK_GRACE_SECONDS", 3600, 0),
                         max_writes=int(max_writes),
                         retry=RetryPolicy(attempts=5, base_s=1.0,
                                           budget_s=settings.number("DRIFT_RETRY_BUDGET_SECONDS", 60, 1)))


# -- the comparison (pure) ---------------------------------------------------------------------------------------
def compare(twin: TwinView, reported: dict[str, Any], expected: Configuration, essential: tuple[str, ...],
            now: Any, ack_grace_s: float) -> str | None:
    """The kind of drift of one configured sensor against the configuration today's sources give, or None.

    The desired sections are compared with what the writer puts there: all of them when the tags say the twin
    holds the document (storage twin), only the essential ones that are present when it was offloaded to Blob
    (storage blob). The configurationUrl is not compared: how a device reaches the Blob copy may change (a SAS)
    without the configuration changing."""
    onboarding = twin.onboarding
    if onboarding.get("status") != CONFIGURED or onboarding.get("configurationHash") != expected.hash:
        return MISSED
    desired_onboarding = twin.desired.get("onboarding") if isinstance(twin.desired.get("onboarding"), dict) else {}
    if (desired_onboarding.get("state") != CONFIGURED or desired_onboarding.get("configurationHash") != expected.hash
            or desired_onboarding.get("templateVersion") != expected.template_version):
        return EDITED
    present = {k: twin.desired[k] for k in CONFIG_SECTIONS if k in twin.desired}
    if onboarding.get("storage") == "blob":
        if any(k not in essential or expected.desired.get(k) != v for k, v in present.items()):
            return EDITED
    elif present != {k: v for k, v in expected.desired.items() if k in CONFIG_SECTIONS}:
        return EDITED
    configuration = reported.get("configuration") if isinstance(reported, dict) else None
    reported_hash = configuration.get("hash") if isinstance(configuration, dict) else None
    if isinstance(reported_hash, str) and reported_hash != expected.hash:
        written = times.parse_utc(onboarding.get("configuredAt"))
        if written is not None and (now - written).total_seconds() >= ack_grace_s:
            return UNACKNOWLEDGED
    return None


def held(rollouts: Iterable[Any], facility: str, template: str) -> bool:
    """A running or halted rollout covers this sensor: template rollouts the template's sensors, override
    rollouts the facility's (of one type, or of every type for '*')."""
    for rollout in rollouts:
        if rollout.kind in ("template", "rollback") and rollout.template == template:
            return True
        if rollout.kind == "overrides" and rollout.facility == facility and rollout.template in (None, template):
            return True
    return False


@dataclass(frozen=True)
class Finding:
    device_id: str
    hub: str
    facility: str
    template: str
    kind: str  # missed | edited | unacknowledged | error
    detail: str | None = None
    outcome: str | None = None  # after a re-apply: configured | unchanged | failed | deviceGone | skipped


@dataclass
class DriftReport:
    scanned: int = 0
    held: int = 0  # in a running or halted rollout: left to it
    findings: list[Finding] = field(default_factory=list)
    queries: int = 0
    incomplete_hubs: list[str] = field(default_factory=list)  # not answering
    deferred_hubs: list[str] = field(default_factory=list)  # not reached within the run's budget
    applied: bool = False

    def count(self, *kinds: str) -> int:
        return sum(1 for f in self.findings if f.kind in kinds)

    @property
    def drifted(self) -> int:
        """Sensors whose twin differs from today's sources (missed or edited)."""
        return self.count(MISSED, EDITED)

    @property
    def repaired(self) -> int:
        return sum(1 for f in self.findings if f.outcome == "configured")

    def groups(self) -> dict[tuple[str, str], Counter]:
        found: dict[tuple[str, str], Counter] = {}
        for f in self.findings:
            counter = found.setdefault((f.facility, f.template), Counter())
            counter[f.kind] += 1
            if f.outcome:
                counter[f.outcome] += 1
        return found

    def as_dict(self, limit: int = 50) -> dict[str, Any]:
        return {"scanned": self.scanned, "drifted": self.drifted, "missed": self.count(MISSED),
                "edited": self.count(EDITED), "unacknowledged": self.count(UNACKNOWLEDGED),
                "errors": self.count("error"), "held": self.held, "applied": self.applied,
                "repaired": self.repaired, "queries": self.queries, "incompleteHubs": self.incomplete_hubs,
                "deferredHubs": self.deferred_hubs,
                "groups": [{"facility": f, "template": t, **dict(sorted(c.items()))}
                           for (f, t), c in sorted(self.groups().items())],
                "sensors": [{"deviceId": f.device_id, "hub": f.hub, "kind": f.kind, "detail": f.detail,
                             "outcome": f.outcome} for f in self.findings[:limit]]}


def drift_query(template: str | None = None, facility: str | None = None) -> str:
    """The configured sensors, filtered on the hub. Values reach the text only after validation against closed
    patterns (IoT Hub's query language has no parameters). SELECT *: the query language documents projections
    other than * as supported in aggregate queries only (docs/contracts.md 3.5)."""
    conditions = [f"tags.onboarding.status = '{CONFIGURED}'", *fleet_conditions(template, facility)]
    return "SELECT * FROM devices WHERE " + " AND ".join(conditions)  # noqa: S608 - validated above


# -- the check (I/O) -------------------------------------------------------------------------------------------
class DriftCheck:
    def __init__(self, setup, store, hosts: tuple[str, ...], settings: DriftSettings,
                 now: Callable[[], Any] = times.utc_now, sleep: Callable[[float], None] = time.sleep):
        self.setup = setup  # twin_setup.service.TwinSetup: sources, the hub adapter, the writer
        self.store = store  # twin_setup.rollouts.RolloutStore
        self.hosts = hosts
        self.settings = settings
        self._now, self._sleep = now, sleep

    def _twins(self, report: DriftReport, template: str | None, facility: str | None,
               run: RunBudget | None) -> list[tuple[str, Twin]]:
        text = drift_query(template, facility)
        found = []
        for host in self.hosts:
            if run is not None and run.spent():
                run.defer("hub")
                report.deferred_hubs.append(host)
                continue
            before = self.setup.hub.queries[host]
            try:
                # one retry budget per hub (one slow hub, not all), cut to what the run has left
                budget = run.calls(self.settings.retry, self._sleep) if run is not None else \
                    RetryBudget(self.settings.retry, sleep=self._sleep)
                found.extend((host, twin) for twin in self.setup.hub.query(host, text, budget=budget))
            except (TransientError, HubAccessDenied, HubRefused) as exc:
                log.error("drift: hub %s not checked: %s", host, exc)
                report.incomplete_hubs.append(host)
            report.queries += self.setup.hub.queries[host] - before
        return found

    def _sources(self, twins: list[tuple[str, Twin]]) -> Sources:
        """Today's sources, read fresh (not a cache that may predate a change)."""
        self.setup.templates.invalidate()
        self.setup.overrides.invalidate()
        templates, overrides = {}, {}
        for name in {str(t.tags.get("sensorType")) for _, t in twins} & set(SENSOR_TYPES.values()):
            try:
                templates[name] = self.setup.templates.get(name)
            except OnboardingError:
                continue  # its sensors count as errors
        for facility in {str(t.tags.get("facility")) for _, t in twins if isinstance(t.tags.get("facility"), str)}:
            rows = self.setup.overrides.get(facility)
            overrides[facility] = list(rows.overrides) if rows.known else None
        return Sources(templates, overrides)

    def run(self, apply: bool | None = None, template: str | None = None, facility: str | None = None,
            actor: str = "timer:check_config_drift", budget: RunBudget | None = None) -> DriftReport:
        """One check over every hub. apply None: as DRIFT_ACTION says (the timer); True/False: the operator's.
        budget: the timer run's (shared/retry.py RUN_BUDGETS_S); hubs and writes it leaves are the next run's."""
        started = time.perf_counter()
        apply = self.settings.action == REAPPLY if apply is None else apply
        report = DriftReport(applied=apply)
        twins = self._twins(report, template, facility, budget)
        sources = self._sources(twins)
        open_rollouts = self.store.open_rollouts((RUNNING, HALTED))
        now = self._now()
        cfg = self.setup.settings
        for hub, twin in twins:
            view = TwinView.of(twin)
            try:
                identity = identify(view.tags, view.device_id).identity
            except OnboardingError:
                continue  # not an onboarded sensor
            report.scanned += 1
            if held(open_rollouts, identity.facility, identity.template):
                report.held += 1
                continue
            try:
                expected = sources.configuration(identity, cfg.limits)
            except OnboardingError as err:
                report.findings.append(Finding(view.device_id, hub, identity.facility, identity.template, "error",
                                               f"{err.code}: {err.detail or ''}"[:200]))
                continue
            kind = compare(view, twin.reported, expected, cfg.essential_sections, now, self.settings.ack_grace_s)
            if kind is not None:
                report.findings.append(Finding(view.device_id, hub, identity.facility, identity.template, kind))
        if apply:
            self._reapply(report, sources, actor, budget)
        self._record(report, actor, time.perf_counter() - started)
        if budget is not None:
            budget.emit(done=report.scanned)
        return report

    def _reapply(self, report: DriftReport, sources: Sources, actor: str, run: RunBudget | None) -> None:
        """Write the drifted sensors through twin setup's writer, paced per hub like a rollout's waves."""
        pacer = Pacer(self.setup.settings.rollout.writes_per_second, sleep=self._sleep)
        writes = 0
        for index, finding in enumerate(report.findings):
            if finding.kind not in (MISSED, EDITED):
                continue
            if writes >= self.settings.max_writes or (run is not None and run.spent()):
                report.findings[index] = _with(finding, "skipped")  # the next run finds it again
                if run is not None:
                    run.defer("reapply")
                continue
            writes += 1
            pacer.wait(finding.hub)
            try:
                outcome = self.setup.reconfigure(finding.hub, finding.device_id,
                                                 sources.templates.get(finding.template),
                                                 force=finding.kind == EDITED)
            except (TransientError, HubAccessDenied, HubRefused) as exc:
                log.warning("drift: %s not re-applied: %s", finding.device_id, exc)
                report.findings[index] = _with(finding, "failed")
                continue
            report.findings[index] = _with(finding, outcome.outcome)
            if outcome.outcome == "configured":
                # outcome 'configured': the sensor's configuration was written again (provisioning_events CHECK)
                self.setup.audit.provisioning(finding.device_id, "configured", "configuration_drift", finding.hub, {
                    "stage": "driftCheck", "kind": finding.kind, "facility": finding.facility,
                    "template": finding.template, "configurationHash": outcome.configuration_hash, "actor": actor})

    def _record(self, report: DriftReport, actor: str, seconds: float) -> None:
        """Telemetry per facility and type (the workbook's drift panel) and one for the run; the run's record
        in config_rollouts (kind drift) when it found something, so `onboarding templates rollouts` lists it: the
        timer's runs and the operator's --apply, never the operator's report-only look (it writes nothing)."""
        for (facility, template), counts in sorted(report.groups().items()):
            telemetry.emit("config_drift", facility=facility, template=template,
                           drifted=counts[MISSED] + counts[EDITED], missed=counts[MISSED], edited=counts[EDITED],
                           unacknowledged=counts[UNACKNOWLEDGED], errors=counts["error"],
                           repaired=counts["configured"], applied=report.applied)
        telemetry.emit("config_drift_run", seconds * 1000, scanned=report.scanned, drifted=report.drifted,
                       unacknowledged=report.count(UNACKNOWLEDGED), errors=report.count("error"), held=report.held,
                       repaired=report.repaired, applied=report.applied, queries=report.queries,
                       incompleteHubs=len(report.incomplete_hubs), deferredHubs=len(report.deferred_hubs))
        if not report.findings or not (report.applied or actor.startswith("timer:")):
            return
        import uuid

        stamp = times.iso_utc(self._now())
        detail = (f"scanned {report.scanned}, drifted {report.drifted} (missed {report.count(MISSED)}, edited "
                  f"{report.count(EDITED)}), unacknowledged {report.count(UNACKNOWLEDGED)}, errors "
                  f"{report.count('error')}, held {report.held}, re-applied {report.repaired}"
                  + ("" if report.applied else " (report only)"))
        try:
            self.store.create(str(uuid.uuid4()), "drift", None, None, "drift", stamp, None, None, actor,
                              "completed", None, detail)
        except Exception as exc:  # noqa: BLE001 - the record must not fail the check; telemetry has the counts
            log.error("drift: run not recorded: %s", type(exc).__name__)


def _with(finding: Finding, outcome: str) -> Finding:
    return Finding(finding.device_id, finding.hub, finding.facility, finding.template, finding.kind, finding.detail,
                   outcome)


def build_drift(svc, setup=None) -> DriftCheck:
    """The drift check from the shared Services (the timer's, the CLI's and the demo's): twin setup's sources and
    writer, the rollout record, the hubs twin setup serves."""
    from twin_setup.rollouts import RolloutStore
    from twin_setup.wiring import build_twin_setup

    setup = setup or build_twin_setup(svc)
    return DriftCheck(setup, RolloutStore(svc.database), setup.settings.hub_hosts, load_settings(svc.settings))
