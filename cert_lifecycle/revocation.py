"""Revocation: a revocations row, a new CRL for the CA in Key Vault, a security alert; idempotent.

Request (POST /api/certificates/revoke, admin key): {"serialNumber": "hex", "issuer": "intermediate-ca-west" or
the CA's DN, "reason": "keyCompromise", "revokedBy": "who (optional)"}; or {"deviceId": ..., "reason": ...} to
revoke every active certificate on record for a device. `issuer` may be left out when the asset register
knows the serial. Revoking what is already revoked changes nothing (and republishes only if the CRL in Key
Vault lacks it, so a half-finished earlier attempt is completed).

For any reason but `superseded`, the device identity is also disabled on every hub where it exists: a device
that IoT Hub already knows authenticates with its certificate directly, and IoT Hub does not read CRLs, so the
CRL alone shuts a compromised sensor out of DPS but not out of its hub.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from cert_lifecycle.authority import CaDirectory, RegionalAuthority
from cert_lifecycle.crl import REASONS, CrlPublisher
from cert_lifecycle.records import CertificateRecords
from shared import telemetry
from shared.audit import AuditWriter
from shared.errors import OnboardingError
from shared.identity import parse_device_id
from shared.iothub import IotHub
from shared.serials import normalise_serial
from shared.times import iso_utc

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 4096
_ACTOR = re.compile(r"[A-Za-z0-9 ._@:/+-]{1,100}")


@dataclass(frozen=True)
class RevocationRequest:
    reason: str
    revoked_by: str
    serial_number: str | None = None
    issuer: str | None = None
    device_id: str | None = None


def parse_revocation_request(body: bytes) -> RevocationRequest:
    """Validate the request body; OnboardingError with a catalogue code otherwise."""
    if len(body) > MAX_BODY_BYTES:
        raise OnboardingError("request_too_large", f"{len(body)} bytes (at most {MAX_BODY_BYTES})")
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise OnboardingError("invalid_request", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise OnboardingError("invalid_request", "expected a JSON object")
    reason = data.get("reason", "unspecified")
    if reason not in REASONS:
        raise OnboardingError("invalid_revocation_reason", f"reason must be one of {', '.join(REASONS)}")
    revoked_by = data.get("revokedBy", "admin")
    if not isinstance(revoked_by, str) or not _ACTOR.fullmatch(revoked_by):
        raise OnboardingError("invalid_request", "revokedBy must be 1-100 plain characters")
    issuer = data.get("issuer")
    if issuer is not None and (not isinstance(issuer, str) or not 0 < len(issuer) <= 255):
        raise OnboardingError("invalid_request", "issuer must be a CA name or distinguished name")
    serial, device_id = data.get("serialNumber"), data.get("deviceId")
    if serial is None and device_id is None:
        raise OnboardingError("invalid_request", "serialNumber or deviceId is required")
    if serial is not None:
        serial = normalise_serial(serial)
        if serial is None:
            raise OnboardingError("invalid_serial_number")
    if device_id is not None:
        device_id = parse_device_id(device_id).device_id
    return RevocationRequest(reason, revoked_by, serial, issuer, device_id)


@dataclass(frozen=True)
class Target:
    authority: RegionalAuthority
    serial_number: str
    device_id: str | None
    on_record: bool


@dataclass
class RevocationResult:
    revoked: list[dict] = field(default_factory=list)
    crls: dict[str, int | None] = field(default_factory=dict)
    disabled_on: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(r["changed"] for r in self.revoked)

    def to_body(self) -> dict:
        return {"changed": self.changed, "revoked": self.revoked, "crlNumbers": self.crls,
                "disabledOn": self.disabled_on, "warnings": self.warnings}


class Revoker:
    def __init__(self, cas: CaDirectory, records: CertificateRecords, publisher: CrlPublisher,
                 audit: AuditWriter, security_alert: Callable[[dict], None], hubs: IotHub | None,
                 hosts: list[str], now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)):
        self._cas = cas
        self._records = records
        self._publisher = publisher
        self._audit = audit
        self._security_alert = security_alert
        self._hubs = hubs
        self._hosts = hosts
        self._now = now

    def targets(self, request: RevocationRequest) -> list[Target]:
        if request.serial_number is None:
            on_record = self._records.active_certificates(request.device_id or "")
            if not on_record:
                raise OnboardingError("certificate_not_found", f"no active certificate for {request.device_id}")
            return [Target(self._cas.resolve(r.issuer), r.serial_number, r.device_id, True) for r in on_record]
        known = self._records.certificates_with_serial(request.serial_number)
        if request.issuer is not None:
            authority = self._cas.resolve(request.issuer)
            known = [r for r in known if r.issuer == authority.subject]
        elif len(known) == 1:
            authority = self._cas.resolve(known[0].issuer)
        else:
            raise OnboardingError("invalid_request", "issuer is required: the serial is "
                                  + ("not on record" if not known else "on record for several CAs"))
        device_id = known[0].device_id if known else request.device_id
        return [Target(authority, request.serial_number, device_id, bool(known))]

    def revoke(self, request: RevocationRequest) -> RevocationResult:
        return self.revoke_targets(self.targets(request), request.reason, request.revoked_by)

    def revoke_targets(self, targets: list[Target], reason: str, revoked_by: str) -> RevocationResult:
        """Record every revocation, then publish each affected CA's CRL once; alert and disable devices."""
        result, now = RevocationResult(), self._now()
        status = "superseded" if reason == "superseded" else "revoked"
        new_targets = []
        for target in targets:
            subject = target.authority.subject
            inserted = self._records.add_revocation(subject, target.serial_number, reason, now, revoked_by)
            if target.on_record:
                self._records.set_status(subject, target.serial_number, status)
            existing = self._records.revocation(subject, target.serial_number)
            result.revoked.append({"issuer": target.authority.name, "serialNumber": target.serial_number,
                                   "deviceId": target.device_id, "reason": existing.reason if existing else reason,
                                   "revokedAt": iso_utc(existing.revoked_at) if existing else iso_utc(now),
                                   "onRecord": target.on_record, "changed": inserted})
            if not target.on_record:
                result.warnings.append(f"serial {target.serial_number} is not in the asset register")
            if inserted:
                new_targets.append(target)
        republished = set()
        for name in sorted({t.authority.name for t in targets}):
            authority = next(t.authority for t in targets if t.authority.name == name)
            published = self._publisher.publish(authority, actor=revoked_by)
            result.crls[name] = published.number if published else None
            if published and published.changed:
                republished.add(name)
                for entry in result.revoked:
                    if entry["issuer"] == name:
                        entry["changed"] = True
        # New rows, and rows an earlier attempt recorded but never got onto a CRL (it failed before announcing).
        for target in targets:
            if target in new_targets or target.authority.name in republished:
                self._announce(target, reason, revoked_by, result, now)
        if reason != "superseded":
            self._disable_devices({t.device_id for t in targets if t.device_id}, reason, result)
        return result

    def _announce(self, target: Target, reason: str, revoked_by: str, result: RevocationResult,
                  now: dt.datetime) -> None:
        self._audit.certificate_event("revoked", device_id=target.device_id, issuer=target.authority.subject,
                                      serial_number=target.serial_number, reason_code=reason, actor=revoked_by,
                                      details={"ca": target.authority.name,
                                               "crlNumber": result.crls.get(target.authority.name)})
        telemetry.emit("certificate_revoked", deviceId=target.device_id, ca=target.authority.name,
                       serialNumber=target.serial_number, reason=reason,
                       crlNumber=result.crls.get(target.authority.name))
        if reason == "superseded":  # routine after every renewal: audited and counted, not a security event
            return
        alert = {"type": "certificateRevoked", "deviceId": target.device_id, "issuer": target.authority.name,
                 "serialNumber": target.serial_number, "reason": reason, "revokedBy": revoked_by, "at": iso_utc(now),
                 "crlNumber": result.crls.get(target.authority.name)}
        try:
            self._security_alert(alert)
        except Exception as exc:  # noqa: BLE001 - the revocation stands; the audit row and telemetry exist
            log.error("security alert for revoked serial %s not queued: %s", target.serial_number, type(exc).__name__)
            result.warnings.append("security alert not queued")

    def _disable_devices(self, device_ids: set[str], reason: str, result: RevocationResult) -> None:
        if self._hubs is None:
            return
        for device_id in sorted(device_ids):
            for host in self._hosts:
                try:
                    if self._hubs.set_device_status(host, device_id, "disabled", f"certificate revoked: {reason}"):
                        result.disabled_on.setdefault(device_id, []).append(host)
                except Exception as exc:  # noqa: BLE001 - reported; the CRL already refuses the certificate
                    log.error("device %s not disabled on %s: %s", device_id, host, type(exc).__name__)
                    result.warnings.append(f"{device_id} not disabled on {host} ({type(exc).__name__})")
        for device_id, hosts in result.disabled_on.items():
            self._audit.certificate_event("device_disabled", device_id=device_id, reason_code=reason,
                                          details={"hubs": hosts})
