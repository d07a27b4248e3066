"""Stuck-sensor digests: one per facility and stage per day, to the facility manager, with what a technician should
check at that stage. Pure; sending reuses the lifecycle's queue and e-mail senders (funnel/service.py).

The checks follow the brief's "network connectivity at facilities" and the ports Microsoft documents for devices:
DPS and IoT Hub take MQTT on TCP 8883, AMQP on 5671 and MQTT/AMQP over WebSockets or HTTPS on 443 (docs/contracts.md
10.3).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from funnel.stages import ACKNOWLEDGED, ALLOCATED, CONFIGURED, CREATED
from shared.facilities import Facility

MAX_DIGEST_DEVICES = 200  # as the certificate digests: well inside a queue message
UNKNOWN_FACILITY = "(unknown)"

STAGE_TITLES = {
    ALLOCATED: "placed on a hub but not created there",
    CREATED: "created on their hub but not configured",
    CONFIGURED: "configured but not applying their configuration",
    ACKNOWLEDGED: "running their configuration but not sending telemetry",
}

CHECKS = {
    ALLOCATED: (
        "The provisioning service placed the sensor but its hub has not created it: nothing to check on site; the "
        "platform team checks the hub (onboarding health).",
    ),
    CREATED: (
        "Twin setup has not configured the sensor (its reason, when it failed, is listed): usually a template or plant "
        "record for the platform team, not a site problem.",
        "Wrong plant: the sensor's name carries the plant its certificate was issued for; a sensor mounted at another "
        "plant gets that plant's configuration, or none when the plant is unknown. Check the label against the site.",
    ),
    CONFIGURED: (
        "The sensor registered and was configured, then never reported applying the configuration:",
        "  1. Power: the sensor is powered and its status LED shows it connected (see the sensor's manual).",
        "  2. Network: outbound TCP 8883 (MQTT) or 443 (MQTT over WebSockets, HTTPS) from the sensor's network to "
        "the hub named below is allowed; a firewall that let the provisioning service through (same ports, "
        "global.azure-devices-provisioning.net) may still block the hub's host name.",
        "  3. Power-cycle it once: it registers again and fetches its configuration.",
    ),
    ACKNOWLEDGED: (
        "The sensor applied its configuration and then sent no telemetry:",
        "  1. The sensing element: probe connected and seated, the sensor's measurement power (loop power for 4-20 mA "
        "sensors) on.",
        "  2. Network: the connection may drop after the configuration: a firewall or proxy idle timeout on TCP 8883 "
        "or 443 to the hub named below.",
        "  3. Wrong plant: the sensor's name carries the plant its certificate was issued for; one mounted elsewhere "
        "runs the wrong plant's settings (check the label against the site).",
    ),
}


@dataclass(frozen=True)
class StuckSensor:
    device_id: str
    hub: str
    facility: str | None
    stage: str
    since: str
    reason: str | None = None  # twin setup's failure code
    last_activity: str | None = None


@dataclass(frozen=True)
class StuckDigest:
    facility: str
    stage: str
    date: str
    to: tuple[str, ...]
    message: dict

    @property
    def key(self) -> str:
        return f"{self.date}:{self.facility}:{self.stage}"


def build_digests(stuck: Iterable[StuckSensor], facilities: dict[str, Facility | None], date: str,
                  fallback_email: str | None) -> list[StuckDigest]:
    """One digest per (facility, stage) over the stuck sensors, oldest first; to the facility's manager, else the
    fallback address (a facility unknown to SQL has nobody on site to tell)."""
    groups: dict[tuple[str, str], list[StuckSensor]] = defaultdict(list)
    for sensor in stuck:
        groups[(sensor.facility or UNKNOWN_FACILITY, sensor.stage)].append(sensor)
    digests = []
    for (code, stage), members in sorted(groups.items()):
        facility = facilities.get(code)
        to = (facility.manager_email,) if facility and facility.manager_email else ()
        if not to and fallback_email:
            to = (fallback_email,)
        members.sort(key=lambda s: (s.since, s.device_id))
        devices = [{"deviceId": s.device_id, "hub": s.hub, "stage": s.stage, "since": s.since, "reason": s.reason,
                    "lastActivity": s.last_activity} for s in members[:MAX_DIGEST_DEVICES]]
        message = {
            "type": "onboardingStuckDigest", "id": f"{date}:{code}:{stage}", "date": date, "facility": code,
            "facilityName": facility.name if facility else None, "stage": stage, "to": list(to),
            "count": len(members), "devices": devices, "omitted": max(0, len(members) - MAX_DIGEST_DEVICES),
            "checks": list(CHECKS.get(stage, ())),
        }
        digests.append(StuckDigest(code, stage, date, to, message))
    return digests


def email_content(digest: StuckDigest) -> dict:
    m = digest.message
    title = STAGE_TITLES.get(m["stage"], f"stuck at {m['stage']}")
    lines = [f"{m['count']} sensor(s) {title} at {m['facilityName'] or m['facility']} ({m['facility']}), {m['date']}.",
             "", "What to check:", *m["checks"], "", "Sensors:"]
    lines += [f"- {d['deviceId']}: {d['stage']} since {d['since']}, hub {d['hub']}"
              + (f", twin setup failed: {d['reason']}" if d.get("reason") else "") for d in m["devices"]]
    if m["omitted"]:
        lines.append(f"... and {m['omitted']} more")
    return {"subject": f"[ONBOARDING] {m['count']} sensor(s) {title} - {m['facility']}", "plainText": "\n".join(lines)}
