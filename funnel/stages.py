"""The onboarding funnel's stages, from what a twin shows. Pure.

    allocated -> created -> configured -> acknowledged -> live

Evidence on the twin, and the time recorded (docs/contracts.md 10):
- allocated: tags.onboarding.allocatedAt (the webhook's initialTwin); that time is the nearest the product sees to
  power-on (DPS calls the webhook when the sensor registers).
- created: the twin exists. Time: tags.onboarding.createdAt when twin setup records it (the DeviceCreated event's
  time), else configuredAt when configured (an upper bound), else when the funnel first saw the twin.
- configured: tags.onboarding.status = configured (twin setup). Time: configuredAt.
- acknowledged: reported.configuration.hash = tags.onboarding.configurationHash: the device reports the configuration
  it applied. Time: the device's reported appliedAt, kept within [configured, now] (a device clock is trusted no
  further), else now.
- live: lastActivityTime later than the acknowledgement by more than the margin (counted from the end of the
  acknowledgement's second: twin times are whole seconds). IoT Hub moves it when the device "authenticated, sent a
  message, or received a message", so the acknowledgement moves it too: the margin tells them apart. Time:
  lastActivityTime as first seen: the first message's time when the sensor sent one since, later when it kept
  sending (at most one reconciliation interval later).

Stages only move forward: a stage once recorded keeps its time (a redelivered event or a re-run adds nothing), and a
stage's time is never earlier than the one before it. A sensor that stays in a stage (other than live) longer than
that stage's limit is stuck: `stuck = {stage, since}` with since the time it entered that stage; progressing clears it.
A twin setup failure (status failed) keeps a sensor at created, where its limit makes it stuck with the reason.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from shared.iothub import Twin
from shared.tags import (
    ALLOCATED_AT,
    FUNNEL_STAGE,
    FUNNEL_STAGES,
    FUNNEL_STUCK,
    ONBOARDING,
    STAGES,
    facility_tag,
    funnel_tags,
    section,
)
from shared.times import iso_utc, parse_utc

ALLOCATED, CREATED, CONFIGURED, ACKNOWLEDGED, LIVE = STAGES
PENDING_STAGES = STAGES[:-1]


@dataclass(frozen=True)
class StageLimits:
    """How long a sensor may stay in each stage before it is stuck (seconds), and the live margin."""

    created_s: float = 600  # created on its hub, not configured by twin setup
    configured_s: float = 900  # configured, the device has not reported the configuration applied
    acknowledged_s: float = 900  # applied, no device-to-cloud message since
    live_margin_s: float = 2  # activity this soon after the acknowledgement is the acknowledgement itself

    def limit(self, stage: str) -> float | None:
        return {ALLOCATED: self.created_s, CREATED: self.created_s, CONFIGURED: self.configured_s,
                ACKNOWLEDGED: self.acknowledged_s}.get(stage)


@dataclass(frozen=True)
class FunnelView:
    """The funnel's view of a twin: the parts it reads."""

    device_id: str
    hub: str
    etag: str | None
    onboarding: dict[str, Any]
    facility: str | None
    configuration: dict[str, Any]  # reported.configuration: {hash, desiredVersion, appliedAt}
    last_activity: dt.datetime | None

    @classmethod
    def of(cls, twin: Twin) -> FunnelView:
        reported = twin.reported.get("configuration")
        return cls(twin.device_id, twin.hub, twin.etag, section(twin.tags, ONBOARDING), facility_tag(twin.tags),
                   reported if isinstance(reported, dict) else {}, twin.last_activity)


@dataclass(frozen=True)
class Transition:
    stage: str
    at: str  # ISO UTC
    source: str  # which evidence gave the time


@dataclass(frozen=True)
class Step:
    """What a reconciliation learns about one sensor."""

    stage: str
    stages: dict[str, str]
    transitions: list[Transition] = field(default_factory=list)
    stuck: dict[str, str] | None = None
    newly_stuck: bool = False
    cleared: bool = False
    patch: dict[str, Any] | None = None  # tags.onboarding merge patch, None when nothing changed
    reason: str | None = None  # twin setup's failure code, when it failed


def _time(value: Any) -> dt.datetime | None:
    return parse_utc(value) if isinstance(value, str) else None


def _recorded(onboarding: dict[str, Any]) -> dict[str, dt.datetime]:
    stages = onboarding.get(FUNNEL_STAGES)
    if not isinstance(stages, dict):
        return {}
    found = {name: _time(stages.get(name)) for name in STAGES}
    return {name: moment for name, moment in found.items() if moment is not None}


def _evidence(view: FunnelView, known: dict[str, dt.datetime], now: dt.datetime, margin_s: float
              ) -> dict[str, tuple[dt.datetime, str]]:
    """Each stage the twin proves reached, with its time and the evidence; stages in order, each needing the last."""
    onboarding = view.onboarding
    found: dict[str, tuple[dt.datetime, str]] = {}
    allocated = _time(onboarding.get(ALLOCATED_AT))
    if allocated is None:
        return found
    found[ALLOCATED] = (allocated, "allocatedAt")
    configured = _time(onboarding.get("configuredAt")) if onboarding.get("status") == CONFIGURED else None
    created = _time(onboarding.get("createdAt"))
    if created is not None:
        found[CREATED] = (created, "createdAt")
    elif configured is not None:
        found[CREATED] = (configured, "configuredAt")
    else:
        found[CREATED] = (now, "firstSeen")
    if configured is None:
        return found
    found[CONFIGURED] = (configured, "configuredAt")
    applied = view.configuration.get("hash")
    if ACKNOWLEDGED not in known and not (applied and applied == onboarding.get("configurationHash")):
        return found
    if ACKNOWLEDGED in known:
        acknowledged = known[ACKNOWLEDGED]
    else:
        reported_at = _time(view.configuration.get("appliedAt"))
        acknowledged = min(max(reported_at, configured), now) if reported_at else now
        found[ACKNOWLEDGED] = (acknowledged, "appliedAt" if reported_at else "firstSeen")
    # Twin times are whole seconds (shared/times.py), the device's appliedAt too: the acknowledgement happened at some
    # moment of its second, so the margin counts from that second's end.
    acknowledged_by = acknowledged.replace(microsecond=0) + dt.timedelta(seconds=1 + margin_s)
    activity = view.last_activity
    if activity is not None and activity > acknowledged_by:
        found[LIVE] = (min(activity, now), "lastActivityTime")
    return found


def advance(view: FunnelView, now: dt.datetime, limits: StageLimits = StageLimits()) -> Step:
    """The stages a twin shows reached, what is new since the tags recorded, whether the sensor is stuck."""
    onboarding = view.onboarding
    known = _recorded(onboarding)
    evidence = _evidence(view, known, now, limits.live_margin_s)
    stages: dict[str, dt.datetime] = {}
    transitions: list[Transition] = []
    previous: dt.datetime | None = None
    for name in STAGES:
        if name in known:
            moment = known[name]
        elif name in evidence:
            moment, source = evidence[name]
            moment = max(moment, previous) if previous is not None else moment
            transitions.append(Transition(name, iso_utc(moment), source))
        else:
            break
        stages[name] = moment
        previous = moment
    stage = next((name for name in reversed(STAGES) if name in stages), None)
    if stage is None:
        return Step(ALLOCATED, {})
    stuck = None
    limit = limits.limit(stage)
    if limit is not None and (now - stages[stage]).total_seconds() > limit:
        stuck = {"stage": stage, "since": iso_utc(stages[stage])}
    before = onboarding.get(FUNNEL_STUCK) if isinstance(onboarding.get(FUNNEL_STUCK), dict) else None
    as_text = {name: iso_utc(moment) for name, moment in stages.items()}
    wanted = funnel_tags(stage, as_text, stuck)
    current = {FUNNEL_STAGE: onboarding.get(FUNNEL_STAGE), FUNNEL_STAGES: onboarding.get(FUNNEL_STAGES),
               FUNNEL_STUCK: before}
    reason = onboarding.get("reason") if onboarding.get("status") == "failed" else None
    return Step(stage, as_text, transitions, stuck,
                newly_stuck=stuck is not None and (before or {}).get("stage") != stuck["stage"],
                cleared=before is not None and stuck is None,
                patch=None if wanted == current else wanted,
                reason=reason if isinstance(reason, str) else None)


def durations(stages: dict[str, str]) -> dict[str, float]:
    """Seconds between stages as recorded: allocated -> configured -> acknowledged -> live, and allocated -> live
    (power-on to first telemetry, as the product sees it)."""
    moments = {name: _time(value) for name, value in stages.items()}

    def between(a: str, b: str) -> float | None:
        start, end = moments.get(a), moments.get(b)
        return round((end - start).total_seconds(), 3) if start and end else None

    pairs = {"allocatedToConfiguredSeconds": (ALLOCATED, CONFIGURED),
             "configuredToAcknowledgedSeconds": (CONFIGURED, ACKNOWLEDGED),
             "acknowledgedToLiveSeconds": (ACKNOWLEDGED, LIVE), "powerOnToLiveSeconds": (ALLOCATED, LIVE)}
    found = {name: between(a, b) for name, (a, b) in pairs.items()}
    return {name: value for name, value in found.items() if value is not None}


# The IoT Hub query that selects the sensors still in the funnel (docs/contracts.md 3.5): placed by the webhook, and
# not yet live. A stage that is not defined yet (before the first reconciliation) makes the IN undefined, hence the
# IS_DEFINED test; live sensors are never returned, so the query's cost follows the sensors being onboarded.
PENDING_QUERY = ("SELECT * FROM devices WHERE IS_DEFINED(tags.onboarding.allocatedAt) AND "
                 "(NOT IS_DEFINED(tags.onboarding.stage) OR "
                 "tags.onboarding.stage IN ['allocated', 'created', 'configured', 'acknowledged'])")
