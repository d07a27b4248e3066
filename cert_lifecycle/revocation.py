"""Revocation: revocation rows, one new CRL per affected CA, security alerts, devices disabled; idempotent.

Request (POST /api/certificates/revoke, admin key), single forms:
    {"serialNumber": "hex", "issuer": "intermediate-ca-west" or the CA's DN, "deviceId"?: ...}
    {"deviceId": ...}                       every active certificate on record for the device
bulk forms (combinable; at most MAX_LIST entries per list and MAX_TARGETS certificates per call):
    {"serialNumbers": [...], "issuer"?: ...}
    {"deviceIds": [...]}                    every active certificate of each device
    {"facility": "FAC03"}                   every active certificate of the facility's devices
    {"lot": "LOT-2026-11-30-A"}             every active certificate of the manufacturing lot (migration 0004; the
                                            lot a partner's batch named, whichever partner: lot_not_found when no
                                            certificate was ever recorded with it)
each with "reason" (default unspecified) and "revokedBy". `issuer` may be left out when the register knows the
serial. Revoking what is already revoked changes nothing (and republishes only if the CRL lacks it, so a
half-finished earlier attempt is completed); however many certificates a call names, each affected CA's CRL is
issued once.

`superseded` is the renewal's reason: it is accepted only for certificates this product issued to that device
(a device that reports another device's serial must not get that certificate revoked), never for a serial that
is not on record.

The revocation rows are the source of truth: when a CA's CRL cannot be published the rows stay, the revocation
is announced (audit, telemetry, security alert) and the devices are disabled all the same, the caller is told
which CAs are unpublished (HTTP 503 revocation_not_published), and the CRL refresh timer publishes them, since
it compares each CRL with SQL.

For any reason but `superseded`, the device identity is also disabled on every hub where it exists: a device
that IoT Hub already knows authenticates with its certificate directly, and IoT Hub does not read CRLs, so the
CRL alone shuts a compromised sensor out of DPS but not out of its hub. Disabling is bounded in time
(disable_budget_s): devices not reached are listed (notDisabled), and revoking again continues with them.

For the same reasons (shared.dps.should_disallow: every reason but `superseded`) the device is also disallowed at
DPS when the app manages DPS enrollments (DPS_SERVICE_HOSTNAME or DPS_CONNECTION_STRING): a disabled individual
enrollment pinning each revoked certificate (the register keeps every certificate it issued, migration 0002), which
DPS matches before the enrollment groups, so the device is refused without the webhook being asked (docs/contracts.md
7.2; the webhook's CRL check stays, for whatever DPS sends). Bounded too (dps_deadline_s); the devices disallowed (now
or already) are listed (disallowedAtDps), failures, devices left out by the deadline and certificates not on record
become warnings, and revoking the same serial numbers again continues (disallowing is idempotent; a device selector
matches active certificates only). A re-issued device is allowed back by deleting that enrollment (`onboarding certs
allow CN`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cert_lifecycle.authority import CaDirectory, RegionalAuthority
from cert_lifecycle.crl import REASONS, CrlPublisher
from cert_lifecycle.records import CertificateRecord, CertificateRecords, RevocationRecord
from shared import telemetry
from shared.audit import AuditWriter
from shared.config import SettingError
from shared.dps import DpsEnrollments, should_disallow
from shared.errors import OnboardingError
from shared.http import json_object
from shared.identity import parse_device_id
from shared.iothub import IotHub
from shared.serials import normalise_serial
from shared.times import iso_utc

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 256 * 1024  # room for MAX_LIST device IDs of 128 characters
MAX_LIST = 1000  # entries per list in one call
MAX_TARGETS = 1000  # certificates one call may revoke (a selector can match more than it names)
DISABLE_BUDGET_S = 90.0  # HTTP triggers are cut off after 230 s; the CRLs are out before disabling starts
DISABLE_PROGRESS_EVERY = 50  # devices
DPS_DEADLINE_S = 60.0  # disallowing at DPS, after the hubs: 90 s + 60 s stay well inside the HTTP trigger's 230 s
_ACTOR = re.compile(r"[A-Za-z0-9 ._@:/+-]{1,100}")
_FACILITY = re.compile(r"[A-Z][A-Z0-9]{1,15}")  # the facility segment of a CN (shared/identity.py)
SINGLE_KEYS = ("serialNumber", "deviceId")
BULK_KEYS = ("serialNumbers", "deviceIds", "facility", "lot")
Progress = Callable[[str, int, int], None]  # (stage: recorded | published | disabled | disallowed, done, total)
DpsSource = Callable[[], DpsEnrollments | None]  # the adapter, built on first use; None: DPS is not managed


@dataclass(frozen=True)
class RevocationRequest:
    reason: str
    revoked_by: str
    serial_number: str | None = None
    issuer: str | None = None
    device_id: str | None = None
    serial_numbers: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    facility: str | None = None
    lot: str | None = None

    @property
    def bulk(self) -> bool:
        return bool(self.serial_numbers or self.device_ids or self.facility or self.lot)


def _json_object(body: bytes) -> dict:
    return json_object(body, MAX_BODY_BYTES)


def _serial(value: object) -> str:
    serial = normalise_serial(value)
    if serial is None:
        raise OnboardingError("invalid_serial_number", f"{str(value)[:50]!r}")
    return serial


def _device_id(value: object) -> str:
    return parse_device_id(value).device_id


def _listed(data: dict, key: str, parse: Callable[[object], str]) -> tuple[str, ...]:
    """A bulk list: non-empty, at most MAX_LIST entries, each valid; duplicates dropped, order kept."""
    values = data.get(key)
    if values is None:
        return ()
    if not isinstance(values, list) or not values:
        raise OnboardingError("invalid_request", f"{key} must be a non-empty list")
    if len(values) > MAX_LIST:
        raise OnboardingError("too_many_certificates", f"{key} has {len(values)} entries (at most {MAX_LIST} per "
                                                       "call): split the list")
    return tuple(dict.fromkeys(parse(value) for value in values))


def _facility(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _FACILITY.fullmatch(value):
        raise OnboardingError("invalid_request", "facility must be a facility code such as FAC03")
    return value


def _lot(value: object) -> str | None:
    if value is None:
        return None
    from cert_lifecycle.batch import parse_lot

    return parse_lot(value)


def _common_fields(data: dict) -> tuple[str, str, str | None]:
    """reason, revokedBy, issuer."""
    reason = data.get("reason", "unspecified")
    if reason not in REASONS:
        raise OnboardingError("invalid_revocation_reason", f"reason must be one of {', '.join(REASONS)}")
    revoked_by = data.get("revokedBy", "admin")
    if not isinstance(revoked_by, str) or not _ACTOR.fullmatch(revoked_by):
        raise OnboardingError("invalid_request", "revokedBy must be 1-100 plain characters")
    issuer = data.get("issuer")
    if issuer is not None and (not isinstance(issuer, str) or not 0 < len(issuer) <= 255):
        raise OnboardingError("invalid_request", "issuer must be a CA name or distinguished name")
    return reason, revoked_by, issuer


def parse_revocation_request(body: bytes) -> RevocationRequest:
    """Validate the request body (a single or a bulk form); OnboardingError with a catalogue code otherwise."""
    data = _json_object(body)
    reason, revoked_by, issuer = _common_fields(data)
    single = [key for key in SINGLE_KEYS if data.get(key) is not None]
    bulk = [key for key in BULK_KEYS if data.get(key) is not None]
    if single and bulk:
        raise OnboardingError("invalid_request", f"{' and '.join(single)} cannot be combined with {', '.join(bulk)}")
    if not single and not bulk:
        raise OnboardingError("invalid_request", "serialNumber or deviceId (or serialNumbers, deviceIds, facility, "
                                                 "lot) is required")
    if bulk:
        serials = _listed(data, "serialNumbers", _serial)
        if issuer is not None and not serials:
            raise OnboardingError("invalid_request", "issuer goes with serialNumbers only")
        return RevocationRequest(reason, revoked_by, issuer=issuer, serial_numbers=serials,
                                 device_ids=_listed(data, "deviceIds", _device_id),
                                 facility=_facility(data.get("facility")), lot=_lot(data.get("lot")))
    serial, device_id = data.get("serialNumber"), data.get("deviceId")
    return RevocationRequest(reason, revoked_by, None if serial is None else _serial(serial), issuer,
                             None if device_id is None else _device_id(device_id))


@dataclass(frozen=True)
class Target:
    authority: RegionalAuthority
    serial_number: str
    device_id: str | None
    on_record: bool


@dataclass(frozen=True)
class RevocationPlan:
    """What a request resolves to, before anything is written (the CLI shows it as the dry run)."""

    targets: list[Target]
    not_found: list[str] = field(default_factory=list)  # listed device IDs with no active certificate on record

    def by_ca(self) -> dict[str, int]:
        return certificates_by_ca(self.targets)


def certificates_by_ca(targets: Iterable[Target]) -> dict[str, int]:
    return dict(sorted(Counter(t.authority.name for t in targets).items()))


def unique_targets(targets: Iterable[Target]) -> list[Target]:
    """One target per (CA, serial), the first seen (selectors may overlap: a serial and its device)."""
    seen: dict[tuple[str, str], Target] = {}
    for target in targets:
        seen.setdefault((target.authority.name, target.serial_number), target)
    return list(seen.values())


def _few(values: Sequence[str], limit: int = 10) -> str:
    more = len(values) - limit
    return ", ".join(values[:limit]) + (f" and {more} more" if more > 0 else "")


def _by_ca(targets: Iterable[Target]) -> dict[str, list[Target]]:
    groups: dict[str, list[Target]] = {}
    for target in targets:
        groups.setdefault(target.authority.name, []).append(target)
    return groups


def revocation_status(reason: str) -> str:
    """The register status a revocation leaves (certificates.status)."""
    return "superseded" if reason == "superseded" else "revoked"


@dataclass
class RevocationResult:
    revoked: list[dict] = field(default_factory=list)
    crls: dict[str, int | None] = field(default_factory=dict)
    disabled_on: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unpublished: dict[str, str] = field(default_factory=dict)  # CA name -> why its CRL was not published
    not_found: list[str] = field(default_factory=list)
    not_disabled: list[str] = field(default_factory=list)
    disallowed_at_dps: list[str] = field(default_factory=list)  # device IDs with a disabled individual enrollment
    newly_revoked: int = 0

    @property
    def changed(self) -> bool:
        return any(r["changed"] for r in self.revoked)

    def summary(self) -> dict:
        return {"certificates": len(self.revoked), "newlyRevoked": self.newly_revoked,
                "unchanged": len(self.revoked) - self.newly_revoked,
                "byCa": dict(sorted(Counter(r["issuer"] for r in self.revoked).items()))}

    def to_body(self) -> dict:
        return {"changed": self.changed, "summary": self.summary(), "revoked": self.revoked, "crlNumbers": self.crls,
                "unpublished": self.unpublished, "disabledOn": self.disabled_on, "notDisabled": self.not_disabled,
                "disallowedAtDps": self.disallowed_at_dps, "notFound": self.not_found, "warnings": self.warnings}

    def unpublished_error(self) -> OnboardingError | None:
        """revocation_not_published when any CA's CRL could not be published (the rows are kept)."""
        if not self.unpublished:
            return None
        return OnboardingError("revocation_not_published", "; ".join(f"{ca}: {why}"
                                                                     for ca, why in self.unpublished.items()))


class Revoker:
    def __init__(self, cas: CaDirectory, records: CertificateRecords, publisher: CrlPublisher,
                 audit: AuditWriter, security_alert: Callable[[dict], None], hubs: IotHub | None,
                 hosts: list[str], now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 disable_budget_s: float = DISABLE_BUDGET_S, monotonic: Callable[[], float] = time.monotonic,
                 dps: DpsSource | None = None, dps_deadline_s: float = DPS_DEADLINE_S):
        self._cas = cas
        self._records = records
        self._publisher = publisher
        self._audit = audit
        self._security_alert = security_alert
        self._hubs = hubs
        self._hosts = hosts
        self._now = now
        self._disable_budget_s = disable_budget_s
        self._monotonic = monotonic
        self._dps = dps
        self._dps_deadline_s = dps_deadline_s

    # -- what a request means -------------------------------------------------------------------------------
    def plan(self, request: RevocationRequest) -> RevocationPlan:
        """The certificates the request names or selects; raises its refusal before anything is written."""
        if not request.bulk:
            return RevocationPlan(self._single_targets(request))
        targets, not_found = [], []
        if request.serial_numbers:
            targets += self._serial_targets(request.serial_numbers, request.issuer, request.reason)
        if request.device_ids:
            found = self._records.active_certificates_of_devices(request.device_ids)
            targets += self._on_record(found)
            have = {r.device_id for r in found}
            not_found = [d for d in request.device_ids if d not in have]
        if request.facility:
            if self._records.facility(request.facility) is None:
                raise OnboardingError("unknown_facility", f"facility {request.facility}")
            targets += self._on_record(self._records.active_certificates_of_facility(request.facility))
        if request.lot:
            in_lot = self._records.active_certificates_of_lot(request.lot)
            if not in_lot and not self._records.lot_certificates(request.lot):
                raise OnboardingError("lot_not_found", f"lot {request.lot}")
            targets += self._on_record(in_lot)
        targets = unique_targets(targets)
        if len(targets) > MAX_TARGETS:
            raise OnboardingError("too_many_certificates", f"the request matches {len(targets)} certificates (at "
                                  f"most {MAX_TARGETS} per call): split it, e.g. into deviceIds lists")
        return RevocationPlan(targets, not_found)

    def _on_record(self, records: Sequence[CertificateRecord]) -> list[Target]:
        authorities = {issuer: self._cas.resolve(issuer) for issuer in {r.issuer for r in records}}
        return [Target(authorities[r.issuer], r.serial_number, r.device_id, True) for r in records]

    def _single_targets(self, request: RevocationRequest) -> list[Target]:
        if request.serial_number is None:
            on_record = self._records.active_certificates(request.device_id or "")
            if not on_record:
                raise OnboardingError("certificate_not_found", f"no active certificate for {request.device_id}")
            return self._on_record(on_record)
        serial = request.serial_number
        known = self._records.certificates_with_serial(serial)
        if request.issuer is not None:
            authority = self._cas.resolve(request.issuer)
            known = [r for r in known if r.issuer == authority.subject]
        elif len(known) == 1:
            authority = self._cas.resolve(known[0].issuer)
        else:
            raise OnboardingError("invalid_request", "issuer is required: the serial is "
                                  + ("not on record" if not known else "on record for several CAs"))
        if request.reason == "superseded":
            _check_supersede(serial, known, request.device_id)
        device_id = known[0].device_id if known else request.device_id
        return [Target(authority, serial, device_id, bool(known))]

    def _serial_targets(self, serials: Sequence[str], issuer: str | None, reason: str) -> list[Target]:
        """Each serial with its CA: the given issuer, else the one CA the register knows it under."""
        on_record: dict[str, list[CertificateRecord]] = {}
        for record in self._records.certificates_with_serials(serials):
            on_record.setdefault(record.serial_number, []).append(record)
        fixed = self._cas.resolve(issuer) if issuer is not None else None
        fixed_subject = fixed.subject if fixed is not None else None
        authorities = {i: self._cas.resolve(i) for i in {r.issuer for rs in on_record.values() for r in rs}}
        targets, unresolved, unknown = [], [], []
        for serial in serials:
            known = on_record.get(serial, [])
            if fixed is not None:
                known = [r for r in known if r.issuer == fixed_subject]
            elif len(known) != 1:
                unresolved.append(serial)
                continue
            if reason == "superseded" and not known:
                unknown.append(serial)
                continue
            authority = fixed or authorities[known[0].issuer]
            targets.append(Target(authority, serial, known[0].device_id if known else None, bool(known)))
        if unresolved:
            raise OnboardingError("invalid_request", "issuer is required for serials not on record or on record "
                                  f"for several CAs: {_few(unresolved)}")
        if unknown:
            raise OnboardingError("superseded_not_on_record", f"not on record: {_few(unknown)}")
        return targets

    # -- doing it -------------------------------------------------------------------------------------------
    def revoke(self, request: RevocationRequest, progress: Progress | None = None) -> RevocationResult:
        plan = self.plan(request)
        result = self.revoke_targets(plan.targets, request.reason, request.revoked_by, progress)
        result.not_found = plan.not_found
        return result

    def revoke_targets(self, targets: list[Target], reason: str, revoked_by: str,
                       progress: Progress | None = None) -> RevocationResult:
        """Record every revocation, then publish each affected CA's CRL once; announce, disable devices."""
        if reason == "superseded" and any(not t.on_record for t in targets):
            raise OnboardingError("superseded_not_on_record",
                                  _few([t.serial_number for t in targets if not t.on_record]))
        result, now = RevocationResult(), self._now()
        new_targets = self._record(targets, reason, revoked_by, now, result, progress)
        self._publish(targets, revoked_by, result, progress)
        for target in new_targets:
            self._announce(target, reason, revoked_by, result, now)
        if reason != "superseded":
            self._disable_devices({t.device_id for t in targets if t.device_id}, reason, result, progress)
        if should_disallow(reason):
            self._disallow_at_dps(targets, reason, revoked_by, result, progress)
        return result

    def _record(self, targets: list[Target], reason: str, revoked_by: str, now: dt.datetime,
                result: RevocationResult, progress: Progress | None) -> list[Target]:
        """The revocation rows and register statuses, a few statements per CA (not per certificate); the targets
        whose row is new. A serial already revoked keeps its first reason, and its status follows that reason
        (which also repairs a status an earlier, interrupted attempt did not set)."""
        recorded: dict[tuple[str, str], tuple[bool, RevocationRecord | None]] = {}
        done = 0
        for name, group in _by_ca(targets).items():
            subject, serials = group[0].authority.subject, [t.serial_number for t in group]
            inserted, existing = self._records.add_revocations(subject, serials, reason, now, revoked_by)
            standing = {s: existing[s].reason if s in existing else reason for s in serials}
            for status in sorted({revocation_status(r) for r in standing.values()}):
                on_record = [t.serial_number for t in group
                             if t.on_record and revocation_status(standing[t.serial_number]) == status]
                if on_record:
                    self._records.set_statuses(subject, on_record, status)
            recorded.update({(name, s): (s in inserted, existing.get(s)) for s in serials})
            done += len(group)
            if progress is not None:
                progress("recorded", done, len(targets))
        for target in targets:
            inserted, existing = recorded[target.authority.name, target.serial_number]
            result.revoked.append({"issuer": target.authority.name, "serialNumber": target.serial_number,
                                   "deviceId": target.device_id, "reason": existing.reason if existing else reason,
                                   "revokedAt": iso_utc(existing.revoked_at if existing else now),
                                   "onRecord": target.on_record, "changed": inserted})
        unknown = [t.serial_number for t in targets if not t.on_record]
        if unknown:
            result.warnings.append(f"not in the asset register: {_few(unknown)}")
        new_targets = [t for t in targets if recorded[t.authority.name, t.serial_number][0]]
        result.newly_revoked = len(new_targets)
        return new_targets

    def _publish(self, targets: list[Target], revoked_by: str, result: RevocationResult,
                 progress: Progress | None = None) -> None:
        """Each affected CA's CRL once. A CA whose CRL cannot be published now is listed in result.unpublished:
        its rows stay, and the CRL refresh (which compares each CRL with SQL) publishes them later."""
        authorities = {t.authority.name: t.authority for t in targets}
        for done, name in enumerate(sorted(authorities), 1):
            self._publish_one(authorities[name], revoked_by, result)
            if progress is not None:
                progress("published", done, len(authorities))

    def _publish_one(self, authority: RegionalAuthority, revoked_by: str, result: RevocationResult) -> None:
        name = authority.name
        try:
            published = self._publisher.publish(authority, actor=revoked_by)
        except Exception as exc:  # noqa: BLE001 - the revocation stands; the caller is told (503)
            why = getattr(exc, "code", None) or type(exc).__name__
            log.error("CRL of %s not published after revocation: %s", name, exc)
            telemetry.emit("crl_publish_deferred", ca=name, reasonCode=why)
            result.crls[name], result.unpublished[name] = None, why
            return
        result.crls[name] = published.number if published else None
        if published and published.changed:  # also completes rows an earlier attempt recorded but never published
            for entry in result.revoked:
                if entry["issuer"] == name:
                    entry["changed"] = True

    def _announce(self, target: Target, reason: str, revoked_by: str, result: RevocationResult,
                  now: dt.datetime) -> None:
        """Audit, telemetry and (for cause) a security alert, once per revocation: when its row is written, whether
        or not its CRL went out in this call (crlPublished says which)."""
        name = target.authority.name
        published = name not in result.unpublished
        self._audit.certificate_event("revoked", device_id=target.device_id, issuer=target.authority.subject,
                                      serial_number=target.serial_number, reason_code=reason, actor=revoked_by,
                                      details={"ca": name, "crlNumber": result.crls.get(name),
                                               "crlPublished": published})
        telemetry.emit("certificate_revoked", deviceId=target.device_id, ca=name,
                       serialNumber=target.serial_number, reason=reason, crlNumber=result.crls.get(name),
                       crlPublished=published)
        if reason == "superseded":  # routine after every renewal: audited and counted, not a security event
            return
        alert = {"type": "certificateRevoked", "deviceId": target.device_id, "issuer": name,
                 "serialNumber": target.serial_number, "reason": reason, "revokedBy": revoked_by, "at": iso_utc(now),
                 "crlNumber": result.crls.get(name), "crlPublished": published}
        try:
            self._security_alert(alert)
        except Exception as exc:  # noqa: BLE001 - the revocation stands; the audit row and telemetry exist
            log.error("security alert for revoked serial %s not queued: %s", target.serial_number, type(exc).__name__)
            if "security alert not queued" not in result.warnings:
                result.warnings.append("security alert not queued")

    def _disable_devices(self, device_ids: set[str], reason: str, result: RevocationResult,
                         progress: Progress | None = None) -> None:
        """Disable each device on every hub, within disable_budget_s; the rest are listed in notDisabled."""
        if self._hubs is None:
            return
        pending = sorted(device_ids)
        deadline = self._monotonic() + self._disable_budget_s
        for index, device_id in enumerate(pending):
            if self._monotonic() > deadline:
                result.not_disabled = pending[index:]
                result.warnings.append(f"{len(result.not_disabled)} device(s) not disabled within "
                                       f"{self._disable_budget_s:g} s: revoke again to continue")
                break
            self._disable(device_id, reason, result)
            if progress is not None and ((index + 1) % DISABLE_PROGRESS_EVERY == 0 or index + 1 == len(pending)):
                progress("disabled", index + 1, len(pending))
        for device_id, hosts in result.disabled_on.items():
            self._audit.certificate_event("device_disabled", device_id=device_id, reason_code=reason,
                                          details={"hubs": hosts})

    def _disable(self, device_id: str, reason: str, result: RevocationResult) -> None:
        for host in self._hosts:
            try:
                if self._hubs.set_device_status(host, device_id, "disabled", f"certificate revoked: {reason}"):
                    result.disabled_on.setdefault(device_id, []).append(host)
            except Exception as exc:  # noqa: BLE001 - reported; the CRL already refuses the certificate
                log.error("device %s not disabled on %s: %s", device_id, host, type(exc).__name__)
                result.warnings.append(f"{device_id} not disabled on {host} ({type(exc).__name__})")

    # -- DPS ------------------------------------------------------------------------------------------------
    def _dps_adapter(self, result: RevocationResult) -> DpsEnrollments | None:
        if self._dps is None:
            return None
        try:
            return self._dps()
        except SettingError as exc:  # a malformed DPS setting must not undo a revocation: said, not raised
            log.error("DPS enrollments not managed: %s", exc)
            result.warnings.append(f"not disallowed at DPS: {exc}")
            return None

    def _disallow_at_dps(self, targets: list[Target], reason: str, revoked_by: str, result: RevocationResult,
                         progress: Progress | None = None) -> None:
        """A disabled individual enrollment per device, pinning its revoked certificate(s) as issued (the register's
        PEM); within dps_deadline_s. Nothing when the app does not manage DPS enrollments."""
        devices = [t for t in targets if t.device_id]
        if not devices:
            return
        adapter = self._dps_adapter(result)
        if adapter is None:
            return
        try:
            self._disallow_with(adapter, devices, reason, revoked_by, result, progress)
        except Exception as exc:  # the revocation stands (rows, CRL, hubs): DPS is reported, never a 500
            log.exception("disallowing at DPS failed")
            result.warnings.append(f"not disallowed at DPS ({type(exc).__name__}): revoke the same serial numbers "
                                   "again to retry")

    def _disallow_with(self, adapter: DpsEnrollments, devices: list[Target], reason: str, revoked_by: str,
                       result: RevocationResult, progress: Progress | None) -> None:
        pems: dict[tuple[str, str], str] = {}
        for group in _by_ca(devices).values():
            subject = group[0].authority.subject
            found = self._records.certificate_pems(subject, [t.serial_number for t in group])
            pems.update({(subject, serial): pem for serial, pem in found.items()})
        pinned: list[tuple[str, str]] = []
        serials: dict[str, list[str]] = {}
        missing: list[str] = []
        for target in devices:
            pem = pems.get((target.authority.subject, target.serial_number))
            if pem is None:
                missing.append(target.serial_number)
                continue
            pinned.append((target.device_id, pem))
            serials.setdefault(target.device_id, []).append(target.serial_number)
        if missing:
            result.warnings.append(f"not disallowed at DPS, no certificate on record (issued before the register "
                                   f"kept certificates, or not by this product): {_few(missing)}")
        if not pinned:
            return
        report = adapter.disallow_many(pinned, deadline_s=self._dps_deadline_s)
        failed = dict(report.failed)
        done = [d for d in dict.fromkeys([*report.disallowed, *report.unchanged]) if d not in failed]
        result.disallowed_at_dps = done
        for device_id in done:
            self._audit.certificate_event("dps_disallowed", device_id=device_id, reason_code=reason, actor=revoked_by,
                                          details={"serialNumbers": serials.get(device_id, []),
                                                   "changed": device_id in report.disallowed})
        for device_id, why in failed.items():
            log.error("device %s not disallowed at DPS: %s", device_id, why)
            result.warnings.append(f"{device_id} not disallowed at DPS ({why[:160]}): revoke its serial number "
                                   "again to retry")
        left = list(dict.fromkeys(report.not_attempted))
        if left:
            result.warnings.append(f"{len(left)} device(s) not disallowed at DPS within {self._dps_deadline_s:g} s: "
                                   f"revoke their serial numbers again to continue ({_few(left)})")
        telemetry.emit("dps_disallow", reasonCode=reason, devices=len(serials), disallowed=len(report.disallowed),
                       unchanged=len(report.unchanged), failed=len(failed), notAttempted=len(left))
        if progress is not None:
            progress("disallowed", len(done), len(serials))


def _check_supersede(serial: str, known: list[CertificateRecord], device_id: str | None) -> None:
    """superseded only for a certificate on record (for that device, when one is named)."""
    if not known:
        raise OnboardingError("superseded_not_on_record", f"serial {serial} is not on record")
    if device_id is not None and device_id not in {r.device_id for r in known}:
        raise OnboardingError("superseded_not_on_record", f"serial {serial} is not on record for {device_id}")
