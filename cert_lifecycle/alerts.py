"""Expiry alerts: per-facility daily digests (pure), sent to the certificate-alerts queue always and as e-mail
through Azure Communication Services when configured; plus the queue sender the lifecycle uses.

One digest per facility and level per scan, never one per device: `renew` goes to the facility manager;
`critical` and `expired` also to CERT_ESCALATION_EMAIL. A digest lists each device with its hub, serial,
notAfter and days left (at most MAX_DIGEST_DEVICES, then a count), nothing secret.

Local use: `python -m cert_lifecycle alerts` lists the digests waiting in the queue.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cert_lifecycle.expiry import ESCALATED, RANK, Decision
from cert_lifecycle.settings import LifecycleSettings
from shared import storage, telemetry
from shared.facilities import Facility
from shared.times import iso_utc

log = logging.getLogger(__name__)
MAX_DIGEST_DEVICES = 200  # keeps a digest well inside a queue message (64 KB, base64)
UNKNOWN_FACILITY = "(unknown)"


class QueueSender:
    """JSON messages to Storage queues, base64-encoded as the Functions queue trigger expects (shared.storage
    message_queue); one client per queue."""

    def __init__(self, queue_service_factory: Callable[[], object]):
        self._factory = queue_service_factory
        self._clients: dict[str, object] = {}

    def client(self, queue: str):
        if queue not in self._clients:
            self._clients[queue] = storage.message_queue(self._factory(), queue)
        return self._clients[queue]

    def send(self, queue: str, message: dict) -> None:
        self.client(queue).send_message(json.dumps(message, default=str, sort_keys=True))


@dataclass(frozen=True)
class Digest:
    facility: str
    level: str
    date: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    message: dict

    @property
    def key(self) -> str:
        return f"{self.date}:{self.facility}:{self.level}"


def build_digests(decisions: Iterable[Decision], facilities: dict[str, Facility | None], now: dt.datetime,
                  escalation_email: str | None, scan_id: str) -> list[Digest]:
    """One digest per (facility, level) over the decisions to notify."""
    groups: dict[tuple[str, str], list[Decision]] = defaultdict(list)
    for decision in decisions:
        if decision.notify:
            groups[(decision.facility or UNKNOWN_FACILITY, decision.level)].append(decision)
    digests = []
    for (code, level), members in sorted(groups.items(), key=lambda kv: (kv[0][0], RANK[kv[0][1]])):
        facility = facilities.get(code)
        to = (facility.manager_email,) if facility and facility.manager_email else ()
        cc = (escalation_email,) if escalation_email and level in ESCALATED else ()
        if not to and escalation_email:  # nobody at the plant to tell: the escalation address gets it
            to, cc = (escalation_email,), ()
        members.sort(key=lambda d: (d.days_left if d.days_left is not None else 0, d.device_id))
        members.sort(key=lambda d: not d.stranded)  # the sensors that need a visit first (stable: by days left)
        devices = [{"deviceId": d.device_id, "hub": d.hub, "serialNumber": d.serial_number,
                    "notAfter": iso_utc(d.not_after) if d.not_after else None, "daysLeft": d.days_left,
                    "renewalState": d.state or "queued", "stranded": d.stranded,
                    "lastActivity": iso_utc(d.last_activity) if d.last_activity else None}
                   for d in members[:MAX_DIGEST_DEVICES]]
        date = now.date().isoformat()
        message = {
            "type": "certificateExpiryDigest", "id": f"{date}:{code}:{level}", "date": date, "scanId": scan_id,
            "facility": code, "facilityName": facility.name if facility else None, "level": level,
            "escalated": level in ESCALATED, "to": list(to), "cc": list(cc), "count": len(members),
            "devices": devices, "omitted": max(0, len(members) - MAX_DIGEST_DEVICES),
            "stranded": sum(1 for d in members if d.stranded),
        }
        digests.append(Digest(code, level, date, to, cc, message))
    return digests


def email_content(digest: Digest) -> dict:
    m = digest.message
    title = {"renew": "certificates due for renewal", "critical": "certificates expiring within days",
             "expired": "EXPIRED certificates"}[digest.level]
    lines = [f"{m['count']} sensor {title} at {m['facilityName'] or m['facility']} ({m['facility']}), {m['date']}.",
             "", "Renewal is automatic for sensors that are online; sensors listed below as expired or critical may",
             "need a visit.", ""]
    lines += [f"- {d['deviceId']}: {d['daysLeft']} days left (notAfter {d['notAfter']}, hub {d['hub']}, "
              f"renewal {d['renewalState']})" + (f"; OFFLINE since {d['lastActivity'] or 'it was installed'}"
                                                 if d.get("stranded") else "") for d in m["devices"]]
    if m["omitted"]:
        lines.append(f"... and {m['omitted']} more")
    if m.get("stranded"):
        lines += ["", f"{m['stranded']} of them are OFFLINE with an expired certificate. Such a sensor cannot renew "
                  "by itself (the provisioning service refuses an expired certificate), so it needs re-onboarding:",
                  *REONBOARDING_STEPS]
    subject = f"[{digest.level.upper()}] {m['count']} {title} - {m['facility']}"
    return {"subject": subject, "plainText": "\n".join(lines)}


# What a facility manager does for a sensor stranded by an expired certificate (README "Sensors offline past
# expiry"): the same path as a replacement sensor, keeping the device ID.
REONBOARDING_STEPS = (
    "  1. Ask the platform team to re-issue the sensor's certificate: onboarding certs reissue DEVICE_ID --reason "
    "expired-offline (supersedes the expired one).",
    "  2. Take the sensor to the line (or the partner's station) that loads certificates: it makes a new key and CSR, "
    "and the certificate signed for it is written to its secure element.",
    "  3. Mount it and power it on: it registers with the provisioning service with the new certificate, goes back to "
    "its hub with its configuration, and reports within minutes.",
    "  Until then, check its power and its network path to the provisioning endpoint (TCP 8883 or 443).",
)


class EmailSender:
    """Azure Communication Services e-mail (azure-communication-email, imported only when configured)."""

    def __init__(self, settings: LifecycleSettings, credential_factory: Callable[[], object]):
        self._settings = settings
        self._credential_factory = credential_factory
        self._client = None

    def _email_client(self):
        if self._client is None:
            from azure.communication.email import EmailClient

            if self._settings.acs_connection_string:
                self._client = EmailClient.from_connection_string(self._settings.acs_connection_string)
            else:
                self._client = EmailClient(self._settings.acs_endpoint, self._credential_factory())
        return self._client

    def send_content(self, to: Iterable[str], content: dict, cc: Iterable[str] = ()) -> None:
        """Hand an e-mail (content: subject and plainText) to ACS (it accepts with 202 and delivers asynchronously;
        no waiting here)."""
        self._email_client().begin_send({
            "senderAddress": self._settings.alert_sender,
            "recipients": {"to": [{"address": a} for a in to], "cc": [{"address": a} for a in cc]},
            "content": content,
        })

    def send(self, digest: Digest) -> None:
        self.send_content(digest.to, email_content(digest), digest.cc)


class AlertSender:
    def __init__(self, queues: QueueSender, settings: LifecycleSettings, email: EmailSender | None = None):
        self._queues = queues
        self._settings = settings
        self._email = email if settings.email_configured else None

    def send(self, digest: Digest) -> bool:
        """True once the digest is on the alerts queue; e-mail failures are logged, the queue copy stands."""
        try:
            self._queues.send(self._settings.alerts_queue, digest.message)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which retries on the next scan
            log.error("certificate alert %s not queued: %s", digest.key, type(exc).__name__)
            return False
        emailed = False
        if self._email is not None and digest.to:
            try:
                self._email.send(digest)
                emailed = True
            except Exception as exc:  # noqa: BLE001 - the queue holds the alert; mail is best effort
                log.error("certificate alert %s not e-mailed: %s", digest.key, type(exc).__name__)
                telemetry.emit("certificate_alert_email_failed", facility=digest.facility, level=digest.level,
                               reasonCode="dependency_unavailable")
        telemetry.emit("certificate_alert", facility=digest.facility, level=digest.level,
                       devices=digest.message["count"], emailed=emailed, escalated=digest.level in ESCALATED)
        return True


def list_alerts(queue_client, drain: bool = False) -> list[dict]:
    """The digests on the alerts queue: peeked (at most 32, the service's limit) or, with drain, received and
    deleted (all of them)."""
    def decode(content) -> dict:
        text = content.decode() if isinstance(content, bytes) else content
        try:
            return json.loads(text)
        except ValueError:
            return {"unreadable": text[:200]}

    if not drain:
        return [decode(m.content) for m in queue_client.peek_messages(max_messages=32)]
    alerts = []
    for message in queue_client.receive_messages(messages_per_page=32, visibility_timeout=30):
        alerts.append(decode(message.content))
        queue_client.delete_message(message)
    return alerts


def format_alerts(alerts: list[dict]) -> str:
    lines = []
    for a in alerts:
        if a.get("type") != "certificateExpiryDigest":
            lines.append(json.dumps(a, sort_keys=True))
            continue
        head = f"{a['date']}  {a['level']:<8} {a['facility']:<8} {a['count']:>5} device(s)  to {', '.join(a['to'])}"
        lines.append(head + (f"  cc {', '.join(a['cc'])}" if a.get("cc") else ""))
        for d in a["devices"][:10]:
            lines.append(f"      {d['deviceId']:<40} {d['daysLeft']:>7} days  {d['hub']}")
        if a["count"] > 10:
            lines.append(f"      ... {a['count'] - 10} more")
    return "\n".join(lines) if lines else "no certificate alerts"


@dataclass(frozen=True)
class AlertChannel:
    """The operators' alert channel, shared by every feature that alerts (expiry digests, hub capacity, stuck
    sensors): the alerts queue, which `onboarding alerts` lists, and e-mail when Communication Services is set."""

    queue: Callable[[dict], None]
    email: Callable[..., None] | None  # send_content(to, content, cc=()), or None without Communication Services


def alert_channel(svc) -> AlertChannel:
    """The channel from the shared Services and the lifecycle's alert settings (queue certificate-alerts, ACS_*)."""
    from cert_lifecycle.settings import lifecycle_settings

    lifecycle = lifecycle_settings(svc.settings)
    queues = QueueSender(lambda: svc.queue_service)
    email = EmailSender(lifecycle, lambda: svc.credential).send_content if lifecycle.email_configured else None
    return AlertChannel(lambda message: queues.send(lifecycle.alerts_queue, message), email)

