"""The daily expiry scan: server-side twin queries per hub -> pure decisions -> renewal messages, digests, tags.

Per hub, two paged queries, filtered in the hub (the number of queries follows the devices that need action,
not the fleet size):
- devices whose reported certificate's notAfter falls inside the widest window (expired ones included);
- devices that report no certificate at all (counted, and listed up to CERT_SCAN_UNREPORTED_PAGES pages).

Nothing is lost on failure, at worst repeated: the renewal message is sent first, then the digests, and only
then the twin tag that records them (conditional on the twin's etag; re-read on 412). A crash in between
makes the next scan send again, and the renewal worker is idempotent. A device already queued at its level
for the same certificate is not queued again; `critical`/`expired` devices are reminded in the digest once a
day until they are renewed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from cert_lifecycle.alerts import AlertSender, build_digests
from cert_lifecycle.expiry import (
    LEVELS,
    OK,
    TAG,
    Decision,
    count_levels,
    decide,
    query_cutoff,
    renewal_message,
    renewal_tag,
)
from cert_lifecycle.records import CertificateRecords
from cert_lifecycle.settings import LifecycleSettings
from shared import telemetry
from shared.audit import AuditWriter
from shared.facilities import Facility
from shared.iothub import HubUnavailable, IotHub, PreconditionFailed, Twin, twin_patch
from shared.retry import RunBudget
from shared.times import iso_utc

log = logging.getLogger(__name__)
MAX_LISTED = 100  # device ids without a certificate kept in the report, per hub
REPORTED = "properties.reported.certificate.notAfter"


def window_query(now: dt.datetime, settings: LifecycleSettings) -> str:
    cutoff = query_cutoff(now, settings.thresholds)  # an ISO-8601 string we format: not user input
    return f"SELECT * FROM devices WHERE IS_DEFINED({REPORTED}) AND {REPORTED} < '{cutoff}'"  # noqa: S608


UNREPORTED_QUERY = f"SELECT * FROM devices WHERE NOT IS_DEFINED({REPORTED})"  # noqa: S608 - IoT Hub query


@dataclass
class HubScan:
    host: str
    queries: int = 0
    in_window: int = 0
    unreadable: list[str] = field(default_factory=list)
    without_certificate: int = 0
    without_certificate_listed: list[str] = field(default_factory=list)
    truncated: bool = False
    error: str | None = None


@dataclass
class ScanReport:
    scan_id: str
    at: str
    hubs: list[HubScan]
    levels: dict[str, int]
    queued: list[str] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)
    stranded: list[str] = field(default_factory=list)  # expired and offline: re-onboarding needed
    digests: list[str] = field(default_factory=list)
    tags_written: int = 0
    failures: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    budget: dict = field(default_factory=dict)  # RunBudget.summary(): what a spent budget left to the next scan

    @property
    def queries(self) -> int:
        return sum(h.queries for h in self.hubs)

    def to_dict(self) -> dict:
        return {
            "scanId": self.scan_id, "at": self.at, "queries": self.queries, "levels": self.levels,
            "queued": len(self.queued), "notified": len(self.notified), "digests": self.digests,
            "stranded": len(self.stranded), "strandedDevices": self.stranded[:MAX_LISTED],
            "tagsWritten": self.tags_written, "failures": self.failures[:50], "durationMs": round(self.duration_ms, 1),
            "budget": self.budget,
            "hubs": [{"host": h.host, "queries": h.queries, "inWindow": h.in_window, "unreadable": h.unreadable[:20],
                      "withoutCertificate": h.without_certificate, "truncated": h.truncated,
                      "withoutCertificateDevices": h.without_certificate_listed, "error": h.error}
                     for h in self.hubs],
        }


class ExpiryScanner:
    def __init__(self, hubs: IotHub, hosts: list[str], send_renewal: Callable[[dict], None],
                 alerts: AlertSender, records: CertificateRecords, audit: AuditWriter,
                 settings: LifecycleSettings):
        self._hubs = hubs
        self._hosts = hosts
        self._send_renewal = send_renewal
        self._alerts = alerts
        self._records = records
        self._audit = audit
        self._settings = settings

    # -- reading ------------------------------------------------------------------------------------
    def _scan_hub(self, host: str, now: dt.datetime, budget: RunBudget) -> tuple[HubScan, list[Decision]]:
        result, decisions = HubScan(host), []
        before = self._hubs.queries[host]
        calls = budget.call_kwargs(self._hubs)  # one retry budget for the hub's queries
        try:
            for twin in self._hubs.query(host, window_query(now, self._settings), self._settings.scan_page_size,
                                         **calls):
                result.in_window += 1
                decision = decide(twin, now, self._settings.thresholds)
                if decision is None:
                    result.unreadable.append(twin.device_id)
                else:
                    decisions.append(decision)
            for twin in self._hubs.query(host, UNREPORTED_QUERY, self._settings.scan_page_size,
                                         max_pages=self._settings.scan_unreported_pages, **calls):
                result.without_certificate += 1
                if len(result.without_certificate_listed) < MAX_LISTED:
                    result.without_certificate_listed.append(twin.device_id)
            limit = self._settings.scan_page_size * self._settings.scan_unreported_pages
            result.truncated = result.without_certificate >= limit  # "at least": the listing stopped there
        except HubUnavailable as exc:
            result.error = str(exc)
            log.error("expiry scan of %s incomplete: %s", host, exc)
        result.queries = self._hubs.queries[host] - before
        return result, decisions

    def _facilities(self, decisions: list[Decision]) -> dict[str, Facility | None]:
        found: dict[str, Facility | None] = {}
        for code in {d.facility for d in decisions if d.notify and d.facility}:
            try:
                found[code] = self._records.facility(code)
            except Exception as exc:  # noqa: BLE001 - the digest still goes to the queue and the escalation address
                log.error("facility %s not read for the digest: %s", code, type(exc).__name__)
                found[code] = None
        return found

    # -- writing ------------------------------------------------------------------------------------
    def _write_tag(self, decision: Decision, patch: dict, budget: RunBudget) -> bool:
        etag = decision.etag
        calls = budget.call_kwargs(self._hubs)
        for _ in range(3):
            try:
                self._hubs.update_twin(decision.hub, decision.device_id, twin_patch(tags={TAG: patch}), etag, **calls)
                return True
            except PreconditionFailed:
                fresh = self._hubs.get_twin(decision.hub, decision.device_id, **calls)
                if fresh is None:
                    return False
                etag = fresh.etag
                patch = _merge_onto(fresh, decision, patch)
        return False

    def run(self, now: dt.datetime | None = None, budget: RunBudget | None = None) -> ScanReport:
        """One scan. With a budget, work not started before it is spent (a hub, a renewal message, a digest, a tag)
        is left to the next scan, which finds the same devices again: a device whose tag was not written is
        queued and notified again, which the worker and the digest ledger take as a repeat."""
        now = now or dt.datetime.now(dt.UTC)
        budget = budget or RunBudget("expiry scan", float("inf"))
        started = time.perf_counter()
        scan_id = uuid.uuid4().hex
        hub_scans, decisions = [], []
        for host in self._hosts:
            if budget.spent():
                budget.defer("hubs")
                hub_scans.append(HubScan(host, error="not scanned: the run's budget was spent"))
                continue
            hub_scan, found = self._scan_hub(host, now, budget)
            hub_scans.append(hub_scan)
            decisions.extend(found)
        report = ScanReport(scan_id, iso_utc(now), hub_scans, count_levels(decisions),
                            stranded=[d.device_id for d in decisions if d.stranded])

        queued_ok: set[str] = set()
        for decision in budget.take([d for d in decisions if d.queue], "renewalMessages"):
            try:
                self._send_renewal(renewal_message(decision, now, scan_id))
                queued_ok.add(decision.device_id)
                report.queued.append(decision.device_id)
            except Exception as exc:  # noqa: BLE001 - this device is retried by the next scan
                report.failures.append(f"{decision.device_id}: renewal not queued ({type(exc).__name__})")
        to_notify = [d for d in decisions if d.notify and (not d.queue or d.device_id in queued_ok)]
        digests = build_digests(to_notify, self._facilities(to_notify), now, self._settings.escalation_email, scan_id)
        notified_groups = set()
        for digest in budget.take(digests, "digests"):
            if self._alerts.send(digest):
                notified_groups.add((digest.facility, digest.level))
                report.digests.append(digest.key)
            else:
                report.failures.append(f"digest {digest.key} not sent")
        tagged = [d for d in decisions
                  if d.tag_patch is not None and not (d.queue and d.device_id not in queued_ok)]
        for decision in budget.take(tagged, "tags"):
            patch = dict(decision.tag_patch)
            notified = (decision.facility or "(unknown)", decision.level) in notified_groups
            if decision.notify and not notified:
                patch.pop("notifiedOn", None)
            elif decision.notify:
                report.notified.append(decision.device_id)
            try:
                if self._write_tag(decision, patch, budget):
                    report.tags_written += 1
                else:
                    report.failures.append(f"{decision.device_id}: tag not written")
            except HubUnavailable as exc:
                report.failures.append(f"{decision.device_id}: tag not written ({exc})")

        report.duration_ms = (time.perf_counter() - started) * 1000
        report.budget = budget.summary()
        self._record(report, decisions, now)
        return report

    def _record(self, report: ScanReport, decisions: list[Decision], now: dt.datetime) -> None:
        for decision in decisions:
            if decision.level != OK:
                telemetry.emit("certificate_expiry", deviceId=decision.device_id, facility=decision.facility,
                               hub=decision.hub, level=decision.level, daysLeft=decision.days_left,
                               serialNumber=decision.serial_number, queued=decision.queue,
                               stranded=decision.stranded)
        without = sum(h.without_certificate for h in report.hubs)
        telemetry.emit("certificate_scan", report.duration_ms, scanId=report.scan_id, queries=report.queries,
                       hubs=len(report.hubs), queued=len(report.queued), digests=len(report.digests),
                       withoutCertificate=without, stranded=len(report.stranded), failures=len(report.failures),
                       incompleteHubs=sum(1 for h in report.hubs if h.error),
                       **{f"level_{level}": report.levels[level] for level in LEVELS})
        self._audit.certificate_event("scan", actor="scan_expiring_certificates", details=report.to_dict())
        log.info("expiry scan %s: %s queries, levels %s, %d queued, %d digests, %d without certificate, %d failures",
                 report.scan_id, report.queries, report.levels, len(report.queued), len(report.digests), without,
                 len(report.failures))


def _merge_onto(fresh: Twin, decision: Decision, patch: dict) -> dict:
    """After a 412: keep the renewal steps' own fields (state, requestId...) when they are for this certificate."""
    tag = renewal_tag(fresh)
    if tag.get("serialNumber") == decision.serial_number:
        return {k: v for k, v in patch.items() if k in ("level", "requestedAt", "notifiedOn", "updatedAt")}
    return patch
