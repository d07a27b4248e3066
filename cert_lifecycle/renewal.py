"""Certificate renewal through the twin, without moving a private key.

    scan        -> queue certificate-renewals {deviceId, hub, serialNumber, level}
    worker      -> desired.certificateRenewal {requestId, requestedAt, status: requested, serialNumber}
                   tags.certificateRenewal   {state: requested, requestId, level, serialNumber}
    device      -> reported.certificateRenewal {requestId, csr}        (its new key stays on the device)
    collector   -> signs the CSR (sign_csr's checks; CN must be the device) ->
                   desired.certificateRenewal {status: issued, certificate, chain, newSerialNumber, notAfter}
                   (a bad CSR: {status: rejected, reasonCode}; the device may answer again)
    device      -> installs it; its hub answers "unauthorized" (IoT Hub knows a DPS-provisioned device by its leaf
                   certificate), so it registers with DPS again with the new certificate; DPS calls the webhook,
                   which records the certificate's first provisioning on the register, and updates the identity
                   (Microsoft Learn "How to roll X.509 device certificates", azure-docs
                   articles/iot-dps/how-to-roll-certificates.md)
    collector   -> once the register says DPS provisioned the device with the new certificate (never on the device's
                   word): tags state completed, tags.certificate = the new one, revokeAfter = now +
                   CERT_SUPERSEDED_GRACE_HOURS; desired cleared of
                   the certificate; after the grace period every other active certificate of the device on
                   record is revoked as `superseded` (one CRL per CA), tags state closed.

Every step is idempotent and conditional on the twin's etag; a step that fails is retried by the queue
(worker) or the next collector run. The collector's query selects only devices with a renewal in progress.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from cert_lifecycle.authority import CaDirectory, CertificateIssuer
from cert_lifecycle.expiry import (
    LEVELS,
    RANK,
    TAG,
    renewal_tag,
    reported_certificate,
)
from cert_lifecycle.records import CertificateRecords
from cert_lifecycle.revocation import Revoker, Target
from cert_lifecycle.settings import LifecycleSettings
from shared import telemetry
from shared.audit import AuditWriter
from shared.errors import OnboardingError
from shared.identity import parse_device_id
from shared.iothub import IotHub, PreconditionFailed, Twin, twin_patch
from shared.retry import RetryBudget, RunBudget
from shared.serials import normalise_serial
from shared.tags import CERTIFICATE
from shared.times import iso_utc, parse_utc

log = logging.getLogger(__name__)
IN_PROGRESS = ("requested", "issued", "completed")
COLLECT_QUERY = "SELECT * FROM devices WHERE tags.certificateRenewal.state IN ['requested', 'issued', 'completed']"
MAX_CONFLICTS = 3


class InvalidRenewalMessage(ValueError):
    """A renewal message that can never be processed (sent to the poison queue, not retried)."""


@dataclass(frozen=True)
class RenewalRequest:
    device_id: str
    hub: str
    serial_number: str
    level: str


def parse_renewal_message(data: object, hosts: list[str]) -> RenewalRequest:
    if not isinstance(data, dict):
        raise InvalidRenewalMessage("not a JSON object")
    try:
        device_id = parse_device_id(data.get("deviceId")).device_id
    except OnboardingError as exc:
        raise InvalidRenewalMessage(f"deviceId: {exc.code}") from None
    hub = data.get("hub")
    if hub not in hosts:
        raise InvalidRenewalMessage("hub is not a configured IoT hub")
    serial = normalise_serial(data.get("serialNumber"))
    if serial is None:
        raise InvalidRenewalMessage("serialNumber is not hexadecimal")
    level = data.get("level")
    if level not in LEVELS:
        raise InvalidRenewalMessage("unknown level")
    return RenewalRequest(device_id, hub, serial, level)


def _csr_fingerprint(csr: str) -> str:
    return hashlib.sha256(csr.encode("utf-8", "replace")).hexdigest()[:16]


@dataclass
class CollectReport:
    queries: int = 0
    issued: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    waiting: int = 0
    # Installed the new certificate (it says so) but DPS has not provisioned it with it yet: locked out of its hub
    # until it does; the expiry scan escalates it on its old certificate if it never does.
    awaiting_reprovisioning: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    budget: dict = field(default_factory=dict)  # RunBudget.summary(): what a spent budget left to the next run

    def to_dict(self) -> dict:
        return {"queries": self.queries, "issued": self.issued, "rejected": self.rejected,
                "completed": self.completed, "closed": self.closed, "waiting": self.waiting,
                "awaitingReprovisioning": self.awaiting_reprovisioning[:50], "failures": self.failures[:50],
                "budget": self.budget}


class RenewalService:
    def __init__(self, hubs: IotHub, hosts: list[str], issuer: CertificateIssuer, cas: CaDirectory,
                 revoker: Revoker, records: CertificateRecords, audit: AuditWriter,
                 settings: LifecycleSettings, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)):
        self._hubs = hubs
        self._hosts = hosts
        self._issuer = issuer
        self._cas = cas
        self._revoker = revoker
        self._records = records
        self._audit = audit
        self._settings = settings
        self._now = now

    def _patch(self, twin: Twin, *, tags: dict | None = None, desired: dict | None = None,
               etag: str | None = None, calls: RetryBudget | None = None) -> None:
        """Merge-patch the renewal's tags and desired properties, If-Match etag (None: unconditional)."""
        self._hubs.update_twin(twin.hub, twin.device_id, twin_patch(tags, desired), etag,
                               **({"budget": calls} if calls is not None else {}))

    def _patch_current(self, twin: Twin, still: Callable[[dict], bool], *, tags: dict | None = None,
                       desired: dict | None = None) -> None:
        """_patch If-Match the twin's etag; when another writer changed the twin meanwhile (the funnel's stage tags,
        a configuration rollout), read it again and write once more while still(its renewal tag) holds, up to
        MAX_CONFLICTS times: a step of the renewal is not put off to the next hourly run for an unrelated write.
        PreconditionFailed when the twin keeps changing, is gone, or its renewal moved on meanwhile."""
        for attempt in range(MAX_CONFLICTS):
            try:
                self._patch(twin, tags=tags, desired=desired, etag=twin.etag)
                return
            except PreconditionFailed:
                fresh = self._hubs.get_twin(twin.hub, twin.device_id)
                if fresh is None or not still(renewal_tag(fresh)) or attempt == MAX_CONFLICTS - 1:
                    raise
                twin = fresh

    def _step(self, step: str, device_id: str, hub: str, **fields) -> None:
        self._audit.certificate_event(f"renewal_{step}", device_id=device_id,
                                      serial_number=fields.get("serialNumber"),
                                      reason_code=fields.get("reasonCode"), actor="renewal",
                                      details={"hub": hub, **fields})
        telemetry.emit("certificate_renewal", step=step, deviceId=device_id, hub=hub,
                       **{k: v for k, v in fields.items() if k != "deviceId"})

    # -- the queue worker -----------------------------------------------------------------------------
    def request(self, request: RenewalRequest, budget: RunBudget | None = None) -> str:
        """Ask the device for a CSR; the outcome name (requested, already_requested, stale, device_gone). With a
        budget (the queue message's), every hub call's retries share what it has left; when it runs out the
        TransientError goes up and the queue delivers the message again."""
        calls = budget.call_kwargs(self._hubs).get("budget") if budget is not None else None
        for _ in range(MAX_CONFLICTS):
            twin = self._hubs.get_twin(request.hub, request.device_id, **({"budget": calls} if calls else {}))
            if twin is None:
                self._step("device_gone", request.device_id, request.hub, serialNumber=request.serial_number)
                return "device_gone"
            outcome = self._request_on(twin, request, calls)
            if outcome is not None:
                return outcome
        raise PreconditionFailed(f"twin of {request.device_id} kept changing")

    def _request_on(self, twin: Twin, request: RenewalRequest, calls: RetryBudget | None = None) -> str | None:
        now = self._now()
        current = reported_certificate(twin.reported)
        if current is not None and current.serial_number != request.serial_number:
            self._step("stale", request.device_id, request.hub, serialNumber=request.serial_number,
                       reportedSerialNumber=current.serial_number)
            return "stale"
        tag = renewal_tag(twin)
        desired = twin.desired.get(TAG) if isinstance(twin.desired.get(TAG), dict) else {}
        same = (normalise_serial(tag.get("serialNumber")) == request.serial_number and tag.get("state") in IN_PROGRESS
                and tag.get("requestId") and desired.get("requestId") == tag.get("requestId"))
        level = request.level
        if tag.get("level") in RANK and RANK[tag["level"]] > RANK[level]:
            level = tag["level"]
        try:
            if same:
                if tag.get("level") != level:
                    self._patch(twin, etag=twin.etag, calls=calls,
                                tags={TAG: {"level": level, "updatedAt": iso_utc(now)}})
                self._step("already_requested", twin.device_id, twin.hub, serialNumber=request.serial_number,
                           requestId=tag["requestId"], level=level)
                return "already_requested"
            request_id = uuid.uuid4().hex
            self._patch(
                twin, etag=twin.etag, calls=calls,
                desired={TAG: {"requestId": request_id, "requestedAt": iso_utc(now), "status": "requested",
                               "serialNumber": request.serial_number, "level": level, "certificate": None,
                               "chain": None, "newSerialNumber": None, "notAfter": None, "issuedAt": None,
                               "reasonCode": None, "detail": None}},
                tags={TAG: {"state": "requested", "requestId": request_id, "level": level,
                            "serialNumber": request.serial_number,
                            "requestedAt": tag.get("requestedAt") or iso_utc(now),
                            "newSerialNumber": None, "issuedAt": None, "completedAt": None, "revokeAfter": None,
                            "closedAt": None, "reasonCode": None, "rejectedCsr": None, "updatedAt": iso_utc(now)}})
        except PreconditionFailed:
            return None
        self._step("requested", twin.device_id, twin.hub, serialNumber=request.serial_number, requestId=request_id,
                   level=level)
        return "requested"

    # -- the collector ----------------------------------------------------------------------------------
    def collect(self, budget: RunBudget | None = None) -> CollectReport:
        """One collector run. With a budget, once it is spent no further hub, renewal or supersede step starts:
        each renewal's state is in its twin's tags, so the next run's query finds what this one left."""
        budget = budget or RunBudget("renewal collector", float("inf"))
        report = CollectReport()
        to_supersede: list[tuple[Twin, dict]] = []
        for host in self._hosts:
            if budget.spent():
                budget.defer("hubs")
                continue
            before = self._hubs.queries[host]
            try:
                for twin in self._hubs.query(host, COLLECT_QUERY, self._settings.scan_page_size,
                                             **budget.call_kwargs(self._hubs)):
                    if budget.spent():
                        budget.defer("renewals")  # at least this one; the rest of the query is not read
                        break
                    try:
                        self._advance(twin, report, to_supersede)
                    except Exception as exc:
                        log.exception("renewal of %s failed", twin.device_id)
                        report.failures.append(f"{twin.device_id}: {type(exc).__name__}")
            except Exception as exc:  # noqa: BLE001 - the other hubs still run; the next run retries this one
                report.failures.append(f"{host}: {type(exc).__name__}: {exc}")
            report.queries += self._hubs.queries[host] - before
        if to_supersede and budget.spent():
            budget.defer("supersede", len(to_supersede))  # state completed: the next run supersedes them
        elif to_supersede:
            self._supersede(to_supersede, report)
        report.budget = budget.summary()
        telemetry.emit("certificate_renewal_collect", queries=report.queries, issued=len(report.issued),
                       rejected=len(report.rejected), completed=len(report.completed), closed=len(report.closed),
                       waiting=report.waiting, awaitingReprovisioning=len(report.awaiting_reprovisioning),
                       failures=len(report.failures))
        return report

    def _advance(self, twin: Twin, report: CollectReport, to_supersede: list) -> None:
        tag, now = renewal_tag(twin), self._now()
        state = tag.get("state")
        if state == "requested":
            self._collect_csr(twin, tag, report)
        elif state == "issued":
            new_serial = normalise_serial(tag.get("newSerialNumber"))
            # Not on the device's word: IoT Hub knows a DPS-provisioned device by its leaf certificate, so the new
            # one is in use only once DPS has provisioned the device with it, as the webhook saw and recorded
            # (shared/certificates.py mark_provisioned; docs/contracts.md 7). Until then the old one stays valid.
            seen = self._records.provisioned_at(twin.device_id, new_serial) if new_serial else None
            if seen is None:
                report.waiting += 1
                current = reported_certificate(twin.reported)
                if current is not None and current.serial_number == new_serial:
                    report.awaiting_reprovisioning.append(twin.device_id)
                return
            grace = dt.timedelta(hours=self._settings.superseded_grace_hours)
            revoke_after = now + grace
            self._patch_current(
                twin, lambda current: (current.get("state") == "issued"
                                       and normalise_serial(current.get("newSerialNumber")) == new_serial),
                desired={TAG: {"status": "completed", "certificate": None, "chain": None}},
                tags={TAG: {"state": "completed", "completedAt": iso_utc(now), "revokeAfter": iso_utc(revoke_after),
                            "reprovisionedAt": iso_utc(seen), "updatedAt": iso_utc(now)},
                      **self._certificate_tag(twin.device_id, new_serial)})
            report.completed.append(twin.device_id)
            self._step("completed", twin.device_id, twin.hub, serialNumber=new_serial,
                       oldSerialNumber=tag.get("serialNumber"), reprovisionedAt=iso_utc(seen))
            if grace <= dt.timedelta(0):
                refreshed = self._hubs.get_twin(twin.hub, twin.device_id)
                if refreshed is not None:
                    to_supersede.append((refreshed, renewal_tag(refreshed)))
        elif state == "completed":
            revoke_after = parse_utc(tag.get("revokeAfter"))
            if revoke_after is None or revoke_after <= now:
                to_supersede.append((twin, tag))
            else:
                report.waiting += 1

    def _certificate_tag(self, device_id: str, serial: str) -> dict:
        """tags.certificate for the device's new certificate, as the allocation wrote it for the first one (the hub
        keeps the twin when the device re-provisions, so nothing else brings it up to date); {} if not on record."""
        found = [r for r in self._records.certificates_with_serial(serial) if r.device_id == device_id]
        if not found:
            return {}
        record = found[0]
        return {CERTIFICATE: {"issuer": self._cas.resolve(record.issuer).name, "serialNumber": record.serial_number,
                              "notBefore": iso_utc(record.not_before), "notAfter": iso_utc(record.not_after)}}

    def _collect_csr(self, twin: Twin, tag: dict, report: CollectReport) -> None:
        answer = twin.reported.get(TAG)
        if not isinstance(answer, dict) or answer.get("requestId") != tag.get("requestId"):
            report.waiting += 1
            return
        csr = answer.get("csr")
        if not isinstance(csr, str) or not csr:
            report.waiting += 1
            return
        fingerprint = _csr_fingerprint(csr)
        if tag.get("rejectedCsr") == fingerprint:  # already refused; wait for the device to send another
            report.waiting += 1
            return
        now = self._now()
        try:
            issued = self._issuer.issue(csr, actor=f"renewal:{tag.get('requestId')}", expected_device_id=twin.device_id)
        except OnboardingError as error:
            if error.status >= 500:
                raise
            self._patch(
                twin, etag=twin.etag,
                desired={TAG: {"status": "rejected", "reasonCode": error.code, "detail": (error.detail or "")[:200]}},
                tags={TAG: {"reasonCode": error.code, "rejectedCsr": fingerprint, "updatedAt": iso_utc(now)}})
            report.rejected.append(twin.device_id)
            self._step("rejected", twin.device_id, twin.hub, reasonCode=error.code, requestId=tag.get("requestId"))
            return
        try:
            self._patch_current(
                twin, lambda current: (current.get("state") == "requested"
                                       and current.get("requestId") == tag.get("requestId")),
                desired={TAG: {"status": "issued", "certificate": issued.pem, "chain": [issued.authority.pem],
                               "newSerialNumber": issued.serial_number,
                               "notAfter": iso_utc(issued.certificate.not_valid_after_utc), "issuedAt": iso_utc(now),
                               "reasonCode": None, "detail": None}},
                tags={TAG: {"state": "issued", "newSerialNumber": issued.serial_number, "issuedAt": iso_utc(now),
                            "reasonCode": None, "updatedAt": iso_utc(now)}})
        except PreconditionFailed:
            # The certificate is on record but undelivered; the next run signs the CSR again, and this one is
            # revoked as superseded when the renewal completes (every other active certificate of the device is).
            report.failures.append(f"{twin.device_id}: twin changed while issuing")
            return
        report.issued.append(twin.device_id)
        self._step("issued", twin.device_id, twin.hub, serialNumber=issued.serial_number,
                   oldSerialNumber=tag.get("serialNumber"), requestId=tag.get("requestId"))

    def _skip_unknown_old(self, twin: Twin, old: str) -> None:
        """The reported old serial is not an active certificate of this device: say why nothing is revoked."""
        owners = {r.device_id for r in self._records.certificates_with_serial(old)}
        if twin.device_id in owners:
            return  # on record for this device and already revoked or superseded: nothing left to do
        detail = "on record for another device" if owners else "not on record (not issued by this product)"
        log.warning("renewal of %s: old serial %s not superseded: %s", twin.device_id, old, detail)
        self._step("supersede_skipped", twin.device_id, twin.hub, serialNumber=old,
                   reasonCode="superseded_not_on_record", detail=detail)

    def _supersede(self, items: list[tuple[Twin, dict]], report: CollectReport) -> None:
        """Revoke every other active certificate of each device (one CRL per CA), then close the renewals.

        Only certificates on record for that very device are superseded: the serial a device reports is its own
        claim, and a device reporting another device's serial, or one this product never issued, must not get it
        revoked. Such a serial is skipped and the skip audited (renewal_supersede_skipped)."""
        targets: list[Target] = []
        for twin, tag in items:
            keep = normalise_serial(tag.get("newSerialNumber"))
            found = [r for r in self._records.active_certificates(twin.device_id) if r.serial_number != keep]
            targets += [Target(self._cas.resolve(r.issuer), r.serial_number, twin.device_id, True) for r in found]
            old = normalise_serial(tag.get("serialNumber"))
            if old and old != keep and old not in {r.serial_number for r in found}:
                self._skip_unknown_old(twin, old)
        try:
            unpublished = self._revoker.revoke_targets(targets, "superseded", "renewal").unpublished if targets else {}
        except Exception as exc:  # noqa: BLE001 - nothing is closed; the next run tries again
            report.failures.append(f"superseded revocation failed: {type(exc).__name__}: {exc}")
            return
        for ca, why in unpublished.items():  # recorded in SQL: the CRL refresh publishes it
            report.failures.append(f"superseded revocations recorded, CRL of {ca} not published yet ({why})")
        now = self._now()
        for twin, _tag in items:
            try:
                self._patch(twin, desired={TAG: None},
                            tags={TAG: {"state": "closed", "closedAt": iso_utc(now), "updatedAt": iso_utc(now)}})
            except Exception as exc:  # noqa: BLE001 - the revocation is done; closing again next run is harmless
                report.failures.append(f"{twin.device_id}: not closed ({type(exc).__name__})")
                continue
            report.closed.append(twin.device_id)
            self._step("closed", twin.device_id, twin.hub, serialNumber=_tag.get("serialNumber"),
                       revoked=[t.serial_number for t in targets if t.device_id == twin.device_id])
