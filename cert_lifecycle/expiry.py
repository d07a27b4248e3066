"""Expiry classification and the scan's per-device decisions. Pure: plain data in, plain data out.

Lifetime-relative thresholds. A level applies when BOTH its absolute window and its share of the lifetime are
reached, i.e. the window is min(days, fraction x lifetime):

    renew     remaining <= min(90 days, lifetime / 3)
    critical  remaining <= min(30 days, lifetime x 10%)
    expired   remaining <= 0

For the reference fleet's 2-year certificates this is exactly "renew within 90 days, escalate within 30"; for a
60-day certificate it is 20 and 6 days, so a short-lived certificate is not flagged the day it is issued (the
misfire of fixed windows). Taking the wider of the two instead would put every certificate shorter than 270
days into renewal at issuance and escalate 2-year certificates at 73 days. Because every window is at most its
absolute figure, the hub query can filter on `notAfter < now + renew days`, and the number of queries follows
the devices that need action. Without a reported notBefore the absolute windows apply.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from cert_lifecycle.settings import Thresholds
from shared.errors import OnboardingError
from shared.identity import parse_device_id
from shared.iothub import Twin
from shared.serials import normalise_serial
from shared.tags import CERTIFICATE_RENEWAL, facility_tag, section
from shared.times import iso_utc, parse_utc

OK, RENEW, CRITICAL, EXPIRED = "ok", "renew", "critical", "expired"
LEVELS = (OK, RENEW, CRITICAL, EXPIRED)
RANK = {level: i for i, level in enumerate(LEVELS)}
ESCALATED = (CRITICAL, EXPIRED)
TAG = CERTIFICATE_RENEWAL
# Every field the scan or the renewal steps keep in tags.certificateRenewal; a new cycle clears the others.
TAG_FIELDS = ("state", "level", "serialNumber", "notAfter", "requestedAt", "notifiedOn", "requestId",
              "newSerialNumber", "issuedAt", "completedAt", "revokeAfter", "closedAt", "reasonCode", "updatedAt")


def windows(thresholds: Thresholds, lifetime: dt.timedelta | None) -> tuple[dt.timedelta, dt.timedelta]:
    """(renew window, critical window) for a certificate of this lifetime."""
    renew = dt.timedelta(days=thresholds.renew_days)
    critical = dt.timedelta(days=thresholds.critical_days)
    if lifetime is not None and lifetime > dt.timedelta(0):
        renew = min(renew, lifetime * thresholds.renew_fraction)
        critical = min(critical, lifetime * thresholds.critical_fraction)
    return renew, critical


def classify(not_after: dt.datetime, now: dt.datetime, thresholds: Thresholds,
             not_before: dt.datetime | None = None) -> str:
    remaining = not_after - now
    if remaining <= dt.timedelta(0):
        return EXPIRED
    lifetime = not_after - not_before if not_before is not None and not_before < not_after else None
    renew, critical = windows(thresholds, lifetime)
    if remaining <= critical:
        return CRITICAL
    if remaining <= renew:
        return RENEW
    return OK


def is_silent(last_activity: dt.datetime | None, now: dt.datetime, thresholds: Thresholds) -> bool:
    """No activity on the hub for offline_hours (or none ever)."""
    return last_activity is None or now - last_activity >= dt.timedelta(hours=thresholds.offline_hours)


def query_cutoff(now: dt.datetime, thresholds: Thresholds) -> str:
    """notAfter below this string (ISO-8601, compared as strings by IoT Hub) can need action."""
    return iso_utc(now + dt.timedelta(days=thresholds.renew_days))


@dataclass(frozen=True)
class ReportedCertificate:
    serial_number: str
    not_after: dt.datetime
    not_before: dt.datetime | None
    issuer: str | None


def reported_certificate(reported: dict | None) -> ReportedCertificate | None:
    """properties.reported.certificate {serialNumber, notAfter, notBefore?, issuer?}; None if unreadable."""
    cert = (reported or {}).get("certificate")
    if not isinstance(cert, dict):
        return None
    serial = normalise_serial(cert.get("serialNumber"))
    not_after = parse_utc(cert.get("notAfter"))
    if serial is None or not_after is None:
        return None
    issuer = cert.get("issuer") if isinstance(cert.get("issuer"), str) else None
    return ReportedCertificate(serial, not_after, parse_utc(cert.get("notBefore")), issuer)


def renewal_tag(twin: Twin) -> dict:
    """tags.certificateRenewal: the renewal's state, kept by the scan and the renewal steps."""
    return section(twin.tags, TAG)


def twin_facility(twin: Twin) -> str | None:
    """The facility the allocation webhook tagged, else the one in the device ID."""
    tagged = facility_tag(twin.tags)
    if tagged:
        return tagged
    try:
        return parse_device_id(twin.device_id).facility
    except OnboardingError:
        return None


@dataclass(frozen=True)
class Decision:
    device_id: str
    hub: str
    facility: str | None
    level: str
    serial_number: str | None
    not_after: dt.datetime | None
    days_left: float | None
    queue: bool = False  # send a renewal message
    notify: bool = False  # include in today's digest
    tag_patch: dict | None = None  # tags.certificateRenewal patch once the sends succeeded
    state: str | None = None  # the renewal state when the scan saw it
    etag: str | None = None
    # expired and silent for Thresholds.offline_hours: cannot renew by itself (DPS refuses an expired certificate at
    # TLS), so its facility manager gets the re-onboarding steps
    stranded: bool = False
    last_activity: dt.datetime | None = None


def _tag_patch(tag: dict, same_cycle: bool, level: str, cert: ReportedCertificate, now: dt.datetime,
               queue: bool, notify: bool) -> dict:
    if same_cycle:
        patch: dict = {"level": level, "updatedAt": iso_utc(now)}
    else:  # a new renewal cycle for this certificate: clear whatever the last cycle left
        patch = dict.fromkeys(TAG_FIELDS)
        patch.update({"state": "queued", "level": level, "serialNumber": cert.serial_number,
                      "notAfter": iso_utc(cert.not_after), "updatedAt": iso_utc(now)})
    if queue:
        patch["requestedAt"] = iso_utc(now)
    if notify:
        patch["notifiedOn"] = now.date().isoformat()
    return patch


def decide(twin: Twin, now: dt.datetime, thresholds: Thresholds) -> Decision | None:
    """The scan's decision for one twin; None when it reports no readable certificate."""
    cert = reported_certificate(twin.reported)
    if cert is None:
        return None
    level = classify(cert.not_after, now, thresholds, cert.not_before)
    days_left = round((cert.not_after - now).total_seconds() / 86400, 1)
    tag = renewal_tag(twin)
    same_cycle = normalise_serial(tag.get("serialNumber")) == cert.serial_number
    previous = tag.get("level") if same_cycle and tag.get("level") in RANK else None
    base = {"device_id": twin.device_id, "hub": twin.hub, "facility": twin_facility(twin), "level": level,
            "serial_number": cert.serial_number, "not_after": cert.not_after, "days_left": days_left,
            "state": tag.get("state") if same_cycle else None, "etag": twin.etag,
            "stranded": level == EXPIRED and is_silent(twin.last_activity, now, thresholds),
            "last_activity": twin.last_activity}
    if level == OK:
        return Decision(**base)
    queue = previous is None or RANK[level] > RANK[previous]
    notify = queue or (level in ESCALATED and tag.get("notifiedOn") != now.date().isoformat())
    if not queue and not notify:
        return Decision(**base)
    return Decision(**base, queue=queue, notify=notify,
                    tag_patch=_tag_patch(tag, same_cycle, level, cert, now, queue, notify))


def renewal_message(decision: Decision, now: dt.datetime, scan_id: str) -> dict:
    """The certificate-renewals message: what the worker needs, no secrets (there are none to leak)."""
    return {
        "type": "certificateRenewal", "deviceId": decision.device_id, "hub": decision.hub,
        "facility": decision.facility, "level": decision.level, "serialNumber": decision.serial_number,
        "notAfter": iso_utc(decision.not_after) if decision.not_after else None, "daysLeft": decision.days_left,
        "requestedAt": iso_utc(now), "scanId": scan_id,
    }


@dataclass
class LevelCounts:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))

    def add(self, level: str) -> None:
        self.counts[level] += 1


def count_levels(decisions: Iterable[Decision]) -> dict[str, int]:
    counts = LevelCounts()
    for decision in decisions:
        counts.add(decision.level)
    return counts.counts
