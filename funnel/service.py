"""The funnel's reconciliation: one timer run over the sensors still being onboarded, on every hub.

    per hub: query the pending twins (funnel/stages.py PENDING_QUERY, paged) -> per twin: advance (pure) ->
    audit each new stage (once per sensor and stage) -> PATCH tags.onboarding with If-Match -> telemetry
    then: stuck sensors -> one digest per facility and stage per day (ledger) -> alerts queue (+ e-mail)

Idempotent: stages recorded in the tags are never re-derived, the audit keeps one row per sensor and stage (audited
before the tags are written: a stage SQL did not take leaves the tags as they were, so the next run audits it
again), a 412 leaves the twin to the next run (someone else wrote it meanwhile), the ledger sends a digest once a
day. A hub that
cannot be read is reported and skipped; the next run covers it. Cost: one query page per hub per 1,000 pending
sensors per run, plus one twin update per sensor whose stage or stuck state changed; live sensors cost nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from funnel.digest import StuckDigest, StuckSensor, build_digests, email_content
from funnel.records import DigestLedger
from funnel.settings import FunnelSettings
from funnel.stages import PENDING_QUERY, PENDING_STAGES, FunnelView, Step, advance, durations
from shared import telemetry
from shared.audit import AuditWriter, StageRow
from shared.facilities import Facility
from shared.iothub import DeviceGone, HubAccessDenied, HubRefused, IotHub, PreconditionFailed
from shared.retry import RUN_BUDGETS_S, RunBudget, TransientError
from shared.tags import ONBOARDING
from shared.times import iso_utc, parse_utc, utc_now

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    pending: Counter = field(default_factory=Counter)  # sensors per current stage (live: reached in this run)
    transitions: Counter = field(default_factory=Counter)  # new stages recorded, per stage
    stuck: Counter = field(default_factory=Counter)  # stuck sensors per stage
    newly_stuck: int = 0
    cleared: int = 0
    updated: int = 0
    conflicts: int = 0
    unaudited: int = 0
    failures: int = 0  # twins left to the next run (their hub did not answer the update in time)
    queries: int = 0
    incomplete_hubs: list[str] = field(default_factory=list)
    budget: dict = field(default_factory=dict)  # RunBudget.summary(): what a spent budget left to the next run
    digests: list[StuckDigest] = field(default_factory=list)  # sent in this run
    stuck_sensors: list[StuckSensor] = field(default_factory=list)


class Reconciler:
    def __init__(self, settings: FunnelSettings, hub: IotHub, hosts: list[str], audit: AuditWriter,
                 ledger: DigestLedger, facility: Callable[[str], Facility | None],
                 queue: Callable[[dict], None], email: Callable[..., None] | None = None,
                 now: Callable[[], Any] = utc_now, workers: int = 8,
                 budget_s: float = RUN_BUDGETS_S["onboarding_funnel"]):
        self.settings = settings
        self.hub = hub
        self.hosts = hosts
        self.audit = audit
        self.ledger = ledger
        self.facility = facility
        self.queue = queue
        self.email = email
        self._now = now
        self.workers = workers
        self.budget_s = budget_s  # one run's time: under the 30 s period, so runs do not pile up
        self._lock = threading.Lock()  # the report's counters, updated from the workers
        self._runs = 0  # which hub a run starts with

    def run(self, budget: RunBudget | None = None) -> RunReport:
        """One reconciliation. Once its budget is spent no hub query or twin update starts; what is left (hubs,
        sensors, digests) the next run finds again, since a sensor's progress is only recorded in its tags."""
        # Reserve half a hub call's timeout: work stops starting at 20 s of the 25, and a call started then ends by
        # the next run's 30 s at worst (a whole timeout held back stopped busy runs at 15 s: half the throughput).
        budget = budget or RunBudget("onboarding_funnel", self.budget_s, reserve_s=self.hub.timeout_s / 2)
        started = time.perf_counter()
        report = RunReport()
        now = self._now()
        queries_before = sum(self.hub.queries.values())
        # Twins are handled by a few workers: a burst of thousands of new sensors (a plant powered on at once) costs
        # a twin update and a few SQL rows each, mostly waiting on the network. Hub by hub, starting one further each
        # run: a hub is queried once the previous hub's twins are written, so a run whose budget ends mid-way has read
        # and audited no more than one hub's pending sensors it cannot finish (a backlog re-read in full every run
        # made each run's cost grow with it), and no hub waits behind the same others every run.
        start = self._runs % len(self.hosts) if self.hosts else 0
        self._runs += 1
        writes: list = []
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="funnel") as pool:
            for host in self.hosts[start:] + self.hosts[:start]:
                wait(writes)
                if budget.spent():
                    budget.defer("hubs")
                    continue
                try:
                    views = [FunnelView.of(twin)
                             for twin in self.hub.query(host, PENDING_QUERY, max_pages=self.settings.max_pages,
                                                        **budget.call_kwargs(self.hub))]
                except (TransientError, HubAccessDenied, HubRefused) as exc:
                    log.error("funnel: hub %s not reconciled: %s", host, exc)
                    report.incomplete_hubs.append(host)
                    continue
                writes = self._reconcile(views, now, report, pool, budget)
        report.queries = sum(self.hub.queries.values()) - queries_before
        if budget.spent() and report.stuck_sensors:
            budget.defer("digests")  # the ledger sends each digest once a day: the next run sends it
        else:
            self._digests(report, now)
        report.budget = budget.summary()
        budget.emit(done=report.updated)
        telemetry.emit("funnel_run", (time.perf_counter() - started) * 1000, hubs=len(self.hosts),
                       queries=report.queries, incompleteHubs=len(report.incomplete_hubs),
                       updated=report.updated, conflicts=report.conflicts, unaudited=report.unaudited,
                       failures=report.failures,
                       newlyStuck=report.newly_stuck,
                       cleared=report.cleared, digests=len(report.digests),
                       **{f"pending_{s}": report.pending[s] for s in PENDING_STAGES},
                       **{f"stuck_{s}": report.stuck[s] for s in PENDING_STAGES},
                       **{f"new_{s}": report.transitions[s] for s in (*PENDING_STAGES, "live")})
        return report

    def _reconcile(self, views: list[FunnelView], now, report: RunReport, pool: ThreadPoolExecutor,
                   budget: RunBudget) -> list:
        """The hub's pending sensors: their steps (pure), every new stage audited in a few statements, then each
        twin's tags written by the workers (their futures returned)."""
        steps: list[tuple[FunnelView, Step]] = []
        for view in views:
            try:
                steps.append((view, advance(view, now, self.settings.limits)))
            except Exception:
                log.exception("funnel: %s failed", view.device_id)
                report.failures += 1
        added = self.audit.onboarding_stages([
            StageRow(view.device_id, t.stage, parse_utc(t.at), view.hub, view.facility, {"source": t.source})
            for view, step in steps for t in step.transitions])
        return [pool.submit(self._guarded, view, step, added, report, budget) for view, step in steps]

    def _guarded(self, view: FunnelView, step: Step, added: set[tuple[str, str]] | None, report: RunReport,
                 budget: RunBudget) -> None:
        if budget.spent():  # asked by the worker, when its turn comes: submitting is instant
            with self._lock:
                budget.defer("sensors")
            return
        try:
            self._one(view, step, added, report, budget)
        except (TransientError, HubAccessDenied, HubRefused) as exc:
            log.warning("funnel: %s left to the next run: %s", view.device_id, exc)
            with self._lock:
                report.failures += 1
        except Exception:
            log.exception("funnel: %s failed", view.device_id)
            with self._lock:
                report.failures += 1

    def _one(self, view: FunnelView, step: Step, added: set[tuple[str, str]] | None, report: RunReport,
             budget: RunBudget | None = None) -> None:
        """One sensor's outcome of a run; added: the stages the run's audit added (None: SQL failed)."""
        with self._lock:
            report.pending[step.stage] += 1
        unaudited = added is None and bool(step.transitions)
        for transition in step.transitions:
            if added is not None and (view.device_id[:128], transition.stage) in added:
                with self._lock:
                    report.transitions[transition.stage] += 1
                self._emit_stage(view, step, transition.stage, transition.at)
        if step.stuck is not None:
            activity = iso_utc(view.last_activity) if view.last_activity else None
            with self._lock:
                report.stuck[step.stuck["stage"]] += 1
                report.stuck_sensors.append(StuckSensor(view.device_id, view.hub, view.facility,
                                                        step.stuck["stage"], step.stuck["since"], step.reason,
                                                        activity))
        if step.patch is None:
            return
        if unaudited:
            with self._lock:
                report.unaudited += 1  # SQL did not take a stage: the tags wait, so the next run audits it again
            return
        try:
            self.hub.update_twin(view.hub, view.device_id, {"tags": {ONBOARDING: step.patch}}, view.etag,
                                 **(budget.call_kwargs(self.hub) if budget is not None else {}))
        except PreconditionFailed:
            with self._lock:
                report.conflicts += 1  # the twin changed since the query: the next run sees it as it is then
            return
        except DeviceGone:
            return
        with self._lock:
            report.updated += 1
            report.newly_stuck += step.newly_stuck
            report.cleared += step.cleared
        if step.newly_stuck:
            telemetry.emit("funnel_stuck", deviceId=view.device_id, hub=view.hub, facility=view.facility,
                           stage=step.stuck["stage"], since=step.stuck["since"], reasonCode=step.reason)

    @staticmethod
    def _emit_stage(view: FunnelView, step: Step, stage: str, at: str) -> None:
        reached = {name: value for name, value in step.stages.items()}
        spans = durations(reached) if stage == "live" else {}
        telemetry.emit("funnel_stage", deviceId=view.device_id, hub=view.hub, facility=view.facility, stage=stage,
                       at=at, **{k: spans.get(k) for k in ("allocatedToConfiguredSeconds",
                                                            "configuredToAcknowledgedSeconds",
                                                            "acknowledgedToLiveSeconds", "powerOnToLiveSeconds")})

    def _digests(self, report: RunReport, now) -> None:
        if not report.stuck_sensors:
            return
        codes = {s.facility for s in report.stuck_sensors if s.facility}
        facilities: dict[str, Facility | None] = {}
        for code in codes:
            try:
                facilities[code] = self.facility(code)
            except Exception as exc:  # noqa: BLE001 - SQL down: the digest goes to the fallback address
                log.error("funnel: facility %s not read: %s", code, type(exc).__name__)
                facilities[code] = None
        date = now.date().isoformat()
        for digest in build_digests(report.stuck_sensors, facilities, date, self.settings.alert_email):
            if not self.ledger.claim(date, digest.facility, digest.stage, digest.message["count"], now):
                continue
            try:
                self.queue(digest.message)
            except Exception as exc:  # noqa: BLE001 - the claim is given back; the next run sends it
                log.error("funnel digest %s not queued: %s", digest.key, type(exc).__name__)
                self.ledger.release(date, digest.facility, digest.stage)
                continue
            emailed = False
            if self.email is not None and digest.to:
                try:
                    self.email(digest.to, email_content(digest))
                    emailed = True
                except Exception as exc:  # noqa: BLE001 - the queue holds it; mail is best effort
                    log.error("funnel digest %s not e-mailed: %s", digest.key, type(exc).__name__)
            report.digests.append(digest)
            telemetry.emit("funnel_digest", facility=digest.facility, stage=digest.stage,
                           devices=digest.message["count"], emailed=emailed)
