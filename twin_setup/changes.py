"""Configuration changes reaching installed sensors: previews, change detection and rollouts. Orchestration.

    BlobCreated {template}-sensor.json --on_template_changed--> start_from_blob: read + validate (invalid: a
        rejected record, no write) -> keep the version -> affected sensors (diff) -> waves -> config-rollouts queue
    timer check_config_changes --> overrides whose updated_at passed the last one seen, and override rows deleted
        since the last check (their keys gone from config_override_keys) -> start_from_overrides
    queue config-rollouts --advance_config_rollout--> advance: one wave's writes (TwinSetup.reconfigure, paced per
        hub), or that wave's acknowledgement check, or the final sweep (late joiners), or completion; re-queued
        with a delay until done
    timer check_config_drift (twin_setup/drift.py) --> sensors that differ from today's sources -> reconfigure
    operators (`onboarding templates ...`) --> preview_template / preview_overrides (no writes), resume, rollback

Every twin write goes through TwinSetup.reconfigure: the same plan, conditional PATCH and configuration hash as
DeviceCreated (one writer). Decisions are pure (twin_setup/diff.py, twin_setup/rollout.py); the record is SQL
(twin_setup/rollouts.py).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import times
from shared.errors import OnboardingError
from shared.identity import SENSOR_TYPES
from shared.iothub import IotHub, Twin
from shared.retry import TransientError
from twin_setup.configuration import Override, Template, parse_override, parse_template, template_blob_name
from twin_setup.diff import FleetDiff, Sources, diff_fleet
from twin_setup.plan import TwinView
from twin_setup.rollout import (
    ACKNOWLEDGED,
    COMPLETED,
    FAILED,
    GONE,
    HALTED,
    PENDING,
    REJECTED,
    ROLLED_BACK,
    RUNNING,
    UNCHANGED,
    WRITTEN,
    DeviceProgress,
    Pacer,
    Target,
    ack_capable,
    acknowledged,
    next_step,
    override_changes,
    plan_waves,
    wave_verdict,
)
from twin_setup.rollouts import Rollout, RolloutStore
from twin_setup.service import TwinSetup

log = logging.getLogger(__name__)

TEMPLATE_SUFFIX = "-sensor.json"
OVERRIDES_SOURCE = "facility_overrides"
_FACILITY = re.compile(r"[A-Z0-9]{2,16}")
STEP_SECONDS = 60.0  # one queue message writes at most this long, then hands on to the next message
LEASE_SECONDS = 300.0


def template_of_blob(blob_name: str) -> str | None:
    """`temperature-sensor.json` -> `temperature`; None for anything else (versions/..., other files)."""
    if "/" in blob_name or not blob_name.endswith(TEMPLATE_SUFFIX):
        return None
    name = blob_name[: -len(TEMPLATE_SUFFIX)]
    return name if name in SENSOR_TYPES.values() else None


def fleet_conditions(template: str | None = None, facility: str | None = None) -> list[str]:
    """Twin query conditions for a template and/or facility. IoT Hub's query language has no parameters: the values
    reach the text only after validation against closed patterns (a known template, capitals and digits)."""
    conditions = []
    if template is not None:
        if template not in SENSOR_TYPES.values():
            raise OnboardingError("unknown_template", f"no template {template[:40]!r}")
        conditions.append(f"tags.sensorType = '{template}'")
    if facility is not None:
        if not _FACILITY.fullmatch(facility):
            raise OnboardingError("invalid_request", f"facility {facility[:20]!r}: capitals and digits")
        conditions.append(f"tags.facility = '{facility}'")
    return conditions


class InstalledFleet:
    """The sensors installed on the hubs, by twin query (read only). Values reach the query text only after
    validation: a known template name and a facility code of capitals and digits."""

    def __init__(self, hub: IotHub, hosts: tuple[str, ...]):
        self._hub, self._hosts = hub, hosts

    def twins(self, template: str | None = None, facility: str | None = None) -> list[tuple[str, Twin]]:
        conditions = fleet_conditions(template, facility)
        query = "SELECT * FROM devices" + (" WHERE " + " AND ".join(conditions) if conditions else "")  # noqa: S608
        return [(host, twin) for host in self._hosts for twin in self._hub.query(host, query)]


@dataclass(frozen=True)
class Preview:
    kind: str
    subject: dict[str, Any]
    diff: FleetDiff | None
    problem: OnboardingError | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, **self.subject, "valid": self.problem is None}
        if self.problem is not None:
            data["validationError"] = {"code": self.problem.code, "detail": self.problem.detail}
        if self.diff is not None:
            data.update(self.diff.as_dict())
        return data


class Changes:
    def __init__(self, setup: TwinSetup, store: RolloutStore, fleet: InstalledFleet,
                 send: Callable[[dict[str, Any], float], None], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, new_id: Callable[[], str] = lambda: str(uuid.uuid4())):
        self.setup = setup
        self.store = store
        self.fleet = fleet
        self._send = send  # (message, delay seconds) -> the config-rollouts queue
        self._clock, self._sleep, self._new_id = clock, sleep, new_id
        self.policy = setup.settings.rollout
        # The sweep waits until every worker's cache of the changed source has read it again (None: that cache's
        # TTL plus a second: TWIN_TEMPLATE_CACHE_SECONDS for a template, TWIN_OVERRIDES_CACHE_SECONDS for overrides).
        self.sweep_after_s: float | None = None

    # -- sources --------------------------------------------------------------------------------------------
    def _overrides(self, facilities: set[str], fresh: bool = True) -> dict[str, list[Override] | None]:
        if fresh:
            self.setup.overrides.invalidate()
        found = {}
        for facility in facilities:
            rows = self.setup.overrides.get(facility)
            found[facility] = list(rows.overrides) if rows.known else None
        return found

    def _templates(self, names: set[str]) -> dict[str, Template]:
        found = {}
        for name in names:
            try:
                found[name] = self.setup.templates.get(name)
            except OnboardingError:
                continue  # sensors of that template show the error in the diff
        return found

    @staticmethod
    def _facilities(twins: list[tuple[str, Twin]]) -> set[str]:
        return {str(t.tags.get("facility")) for _, t in twins if isinstance(t.tags.get("facility"), str)}

    def _diff(self, twins: list[tuple[str, Twin]], before: Sources, after: Sources, selected=None) -> FleetDiff:
        cfg = self.setup.settings
        views = [(hub, TwinView.of(t)) for hub, t in twins]
        return diff_fleet(views, before, after, cfg.limits, cfg.essential_sections, self.setup.configurations.url,
                          **({"selected": selected} if selected else {}))

    # -- previews (no writes) -------------------------------------------------------------------------------
    def preview_template(self, name: str, raw: bytes) -> Preview:
        subject = {"template": name, "blob": template_blob_name(name)}
        try:
            candidate = parse_template(name, raw, self.setup.settings.limits, "(local file)")
        except OnboardingError as err:
            return Preview("template", subject, None, err)
        subject["templateVersion"] = candidate.version
        twins = self.fleet.twins(template=name)
        overrides = self._overrides(self._facilities(twins), fresh=False)
        current = self._templates({name})
        if name in current:
            subject["currentVersion"] = current[name].version
        diff = self._diff(twins, Sources(current, overrides), Sources({name: candidate}, overrides))
        return Preview("template", subject, diff)

    def preview_overrides(self, facility: str, sensor_type: str, text: str) -> Preview:
        subject = {"facility": facility, "sensorType": sensor_type}
        if sensor_type != "*" and sensor_type not in SENSOR_TYPES.values():
            names = ", ".join(sorted(set(SENSOR_TYPES.values())))
            return Preview("overrides", subject, None, OnboardingError(
                "unknown_sensor_type", f"{sensor_type[:40]!r}: a template name ({names}) or *"))
        candidate = parse_override(facility, sensor_type, text)
        if candidate.document is None:
            return Preview("overrides", subject, None,
                           OnboardingError("invalid_override", f"{facility}/{sensor_type}: {candidate.problem}"))
        twins = self.fleet.twins(template=None if sensor_type == "*" else sensor_type, facility=facility)
        current = self._overrides({facility}, fresh=False)
        if current.get(facility) is None:
            return Preview("overrides", subject, None, OnboardingError("unknown_facility", f"facility {facility}"))
        rows = [o for o in current[facility] if o.sensor_type != sensor_type] + [candidate]
        templates = self._templates({str(t.tags.get("sensorType")) for _, t in twins} & set(SENSOR_TYPES.values()))
        diff = self._diff(twins, Sources(templates, current), Sources(templates, {facility: rows}))
        problems = {d for g in diff.groups.values() for d in g.errors.values() if d.startswith("invalid_override")}
        problem = OnboardingError("invalid_override", sorted(problems)[0].split(": ", 1)[1]) if problems else None
        return Preview("overrides", subject, diff, problem)

    # -- starting rollouts ----------------------------------------------------------------------------------
    def start_from_blob(self, blob_name: str, etag: str | None, actor: str) -> Rollout | None:
        """A template blob was written: validate it and start its rollout (None: not a template, or already)."""
        name = template_of_blob(blob_name)
        if name is None:
            log.info("blob %s is not a template: no rollout", blob_name[:100])
            return None
        try:
            template, raw = self.setup.templates.current(name)
        except OnboardingError as err:
            rollout_id = self._new_id()
            if self.store.create(rollout_id, "template", name, None, blob_name, etag or "unknown", None, None, actor,
                                 REJECTED, err.code, err.detail):
                log.warning("template %s refused, no rollout: %s", blob_name, err)
            return self.store.get(rollout_id)
        return self._start_template("template", template, raw, actor)

    def _start_template(self, kind: str, template: Template, raw: bytes, actor: str) -> Rollout | None:
        source, etag = template.blob_name, template.etag or "unknown"
        if self.store.exists(source, etag):
            return None
        self.setup.templates.archive(template, raw)
        self.setup.templates.invalidate()  # new devices get the new version at once, not after the cache TTL
        twins = self.fleet.twins(template=template.name)
        overrides = self._overrides(self._facilities(twins))
        versions = Counter(str(TwinView.of(t).onboarding.get("templateVersion")) for _, t in twins
                           if TwinView.of(t).onboarding.get("templateVersion"))
        versions.pop(template.version, None)
        previous = versions.most_common(1)[0][0] if versions else None
        before_templates = {}
        if previous is not None:
            kept = self.setup.templates.version(template.name, previous)
            if kept is not None:
                before_templates[template.name] = kept[0]
        diff = self._diff(twins, Sources(before_templates, overrides), Sources({template.name: template}, overrides))
        return self._record(kind, template.name, None, source, etag, template.version, previous, actor, twins, diff)

    def start_from_overrides(self, facility: str, sensor_type: str, stamp: str, actor: str) -> Rollout | None:
        source = f"{OVERRIDES_SOURCE}/{facility}/{sensor_type}"
        if self.store.exists(source, stamp):
            return None
        template = None if sensor_type == "*" else sensor_type
        twins = self.fleet.twins(template=template if template in SENSOR_TYPES.values() else None, facility=facility)
        overrides = self._overrides({facility})
        templates = self._templates({str(t.tags.get("sensorType")) for _, t in twins} & set(SENSOR_TYPES.values()))
        sources = Sources(templates, overrides)
        diff = self._diff(twins, sources, sources)
        invalid = sorted({d for g in diff.groups.values() for d in g.errors.values()
                          if d.startswith("invalid_override")})
        if invalid:
            rollout_id = self._new_id()
            self.store.create(rollout_id, "overrides", template, facility, source, stamp, None, None, actor, REJECTED,
                              "invalid_override", invalid[0])
            return self.store.get(rollout_id)
        return self._record("overrides", template, facility, source, stamp, None, None, actor, twins, diff)

    def _record(self, kind: str, template: str | None, facility: str | None, source: str, etag: str,
                version: str | None, previous: str | None, actor: str, twins: list[tuple[str, Twin]],
                diff: FleetDiff) -> Rollout | None:
        rollout_id = self._new_id()
        fields = sorted({f for g in diff.groups.values() for f in g.fields})
        detail = (f"{diff.changing} sensors to write; fields: {', '.join(fields[:20])}"
                  + (f" (+{len(fields) - 20})" if len(fields) > 20 else "")
                  + (f"; {diff.errors} sensors fail validation" if diff.errors else ""))
        state = RUNNING if diff.changing else COMPLETED
        if not self.store.create(rollout_id, kind, template, facility, source, etag, version, previous, actor, state,
                                 None, detail):
            return None
        by_id = {t.device_id: (hub, t) for hub, t in twins}
        targets = [Target(device_id, hub, str(by_id[device_id][1].tags.get("facility") or ""))
                   for hub, device_id in diff.changing_devices]
        waves = plan_waves(targets, self.policy, rollout_id)
        rows = [[(t.device_id, t.hub, t.facility,
                  TwinView.of(by_id[t.device_id][1]).onboarding.get("configurationHash"),
                  ack_capable(by_id[t.device_id][1].reported)) for t in wave] for wave in waves]
        self.store.add_devices(rollout_id, rows)
        if waves:
            self.store.start_wave(rollout_id, 0)
            self._send({"rolloutId": rollout_id}, 0)
        log.info("rollout %s (%s %s): %d sensors in %d waves", rollout_id, kind, source, diff.changing, len(waves))
        return self.store.get(rollout_id)

    # -- advancing -----------------------------------------------------------------------------------------
    def advance(self, rollout_id: str) -> float | None:
        """One step of the rollout; the delay before the next step, or None when there is none to schedule."""
        if not self.store.claim(rollout_id, LEASE_SECONDS):
            return None  # another worker holds it and schedules its own next step
        try:
            rollout = self.store.get(rollout_id)
            if rollout is None:
                return None
            devices = self.store.devices(rollout_id)
            by_wave: dict[int, list[str]] = {}
            for d in devices:
                by_wave.setdefault(d.wave, []).append(d.state)
            step = next_step(rollout.state, rollout.current_wave, rollout.wave_count, by_wave,
                             swept=rollout.swept_at is not None)
            if step.action == "write":
                return self._write_wave(rollout, [d for d in devices if d.wave == step.wave and d.state == PENDING])
            if step.action == "verify":
                return self._verify_wave(rollout, [d for d in devices if d.wave == step.wave])
            if step.action == "sweep":
                return self._sweep(rollout, {d.device_id for d in devices})
            if step.action == "complete":
                self.store.set_state(rollout_id, COMPLETED, expected=(RUNNING,))
                log.info("rollout %s completed", rollout_id)
            return None
        finally:
            self.store.release(rollout_id)

    def _pinned(self, rollout: Rollout) -> Template | None:
        if rollout.template is None or rollout.template_version is None:
            return None
        kept = self.setup.templates.version(rollout.template, rollout.template_version)
        return kept[0] if kept else None

    def _write_wave(self, rollout: Rollout, pending) -> float | None:
        template = self._pinned(rollout)
        if rollout.kind == "overrides":
            self.setup.overrides.invalidate()
        pacer = Pacer(self.policy.writes_per_second, self._clock, self._sleep)
        started = self._clock()
        for device in pending:
            if self._clock() - started > STEP_SECONDS:
                return 0  # the rest in the next message
            if self.store.get(rollout.rollout_id).state != RUNNING:
                return None  # halted or rolled back meanwhile
            pacer.wait(device.hub)
            try:
                outcome = self.setup.reconfigure(device.hub, device.device_id, template)
            except TransientError as exc:
                log.warning("rollout %s: %s: %s; trying again later", rollout.rollout_id, device.device_id, exc)
                return self.policy.ack_poll_s
            state = {"configured": WRITTEN, "unchanged": UNCHANGED, "deviceGone": GONE}.get(outcome.outcome, FAILED)
            self.store.set_device(rollout.rollout_id, device.device_id, state,
                                  outcome.reason_code if state == FAILED else None, outcome.configuration_hash)
        return self.policy.ack_poll_s  # the wave's sensors get a moment to acknowledge before the check

    def _verify_wave(self, rollout: Rollout, wave) -> float | None:
        """The wave's acknowledgement check (every wave, the canary also on its failed writes): pass starts the
        next wave; fail halts the rollout; wait asks again after ack_poll_s. Each sensor's wait counts from its
        own write."""
        number = wave[0].wave if wave else rollout.current_wave
        for device in wave:
            if device.state != WRITTEN or not device.ack_capable:
                continue
            twin = self.setup.hub.get_twin(device.hub, device.device_id)
            if twin is not None and acknowledged(twin.reported, device.configuration_hash):
                self.store.set_device(rollout.rollout_id, device.device_id, ACKNOWLEDGED)
        now = times.utc_now()
        fallback = rollout.wave_started_at or now

        def waited(at) -> float:
            return (now - (at or fallback)).total_seconds()

        devices = self.store.devices(rollout.rollout_id, number)
        verdict = wave_verdict([DeviceProgress(d.device_id, d.state, d.ack_capable, waited(d.updated_at))
                                for d in devices], waited(None), self.policy, canary=number == 0)
        if verdict.outcome == "wait":
            return self.policy.ack_poll_s
        if verdict.outcome == "fail":
            self.store.set_state(rollout.rollout_id, HALTED, verdict.reason, verdict.detail, expected=(RUNNING,))
            log.warning("rollout %s halted at wave %d: %s", rollout.rollout_id, number, verdict.detail)
            return None
        self.store.start_wave(rollout.rollout_id, number + 1)
        return 0

    def _sweep(self, rollout: Rollout, known: set[str]) -> float | None:
        """After the last wave: sensors twin setup configured meanwhile from a cached older source (another worker's
        template or overrides cache, up to its TTL) get a last wave, whether they joined late or were already in the
        rollout (a DeviceCreated write from a stale cache can land after the rollout's own write: found by `make
        chaos`). Waits until those caches have expired; skipped when the template blob was replaced since (the newer
        rollout carries the fleet)."""
        started = rollout.created_at or times.utc_now()
        cfg = self.setup.settings
        after = self.sweep_after_s if self.sweep_after_s is not None else 1.0 + (
            cfg.overrides_ttl_s if rollout.kind == "overrides" else cfg.template_ttl_s)
        remaining = after - (times.utc_now() - started).total_seconds()
        if remaining > 0:
            return min(remaining, max(self.policy.ack_poll_s, 1.0))
        late: list[tuple[str, Twin]] = []
        if rollout.kind in ("template", "rollback") and rollout.template is not None:
            template = self._pinned(rollout)
            current = self.setup.templates.etag(rollout.template)
            if template is not None and current == rollout.source_etag:
                twins = self.fleet.twins(template=rollout.template)
                overrides = self._overrides(self._facilities(twins))
                sources = Sources({template.name: template}, overrides)
                diff = self._diff(twins, sources, sources)
                changing = {device_id for _, device_id in diff.changing_devices}
                late = [(hub, t) for hub, t in twins if t.device_id in changing]
        elif rollout.kind == "overrides" and rollout.facility is not None:
            twins = self.fleet.twins(template=rollout.template, facility=rollout.facility)
            overrides = self._overrides({rollout.facility})
            templates = self._templates({str(t.tags.get("sensorType")) for _, t in twins} & set(SENSOR_TYPES.values()))
            sources = Sources(templates, overrides)
            diff = self._diff(twins, sources, sources)
            changing = {device_id for _, device_id in diff.changing_devices}
            late = [(hub, t) for hub, t in twins if t.device_id in changing]
        self.store.mark_swept(rollout.rollout_id)
        if not late:
            return 0
        joiners = [(hub, t) for hub, t in late if t.device_id not in known]
        overwritten = [t.device_id for _, t in late if t.device_id in known]
        self.store.append_wave(rollout.rollout_id, rollout.wave_count, [
            (t.device_id, hub, str(t.tags.get("facility") or ""),
             TwinView.of(t).onboarding.get("configurationHash"), ack_capable(t.reported)) for hub, t in joiners])
        self.store.requeue(rollout.rollout_id, rollout.wave_count, overwritten)
        self.store.start_wave(rollout.rollout_id, rollout.wave_count)
        log.info("rollout %s: sweep found %d late joiners and %d sensors overwritten since their write",
                 rollout.rollout_id, len(joiners), len(overwritten))
        return 0

    # -- operators -----------------------------------------------------------------------------------------
    def schedule(self, rollout_id: str, delay_s: float) -> None:
        self._send({"rolloutId": rollout_id}, delay_s)

    def _rollout(self, rollout_id: str) -> Rollout:
        rollout = self.store.get(rollout_id)
        if rollout is None:
            raise OnboardingError("rollout_not_found", f"no rollout {rollout_id[:40]!r}")
        return rollout

    def resume(self, rollout_id: str, actor: str) -> Rollout:
        """Continue a halted rollout past the wave it halted on (the operator accepts what that wave showed)."""
        rollout = self._rollout(rollout_id)
        if not self.store.set_state(rollout_id, RUNNING, None, f"resumed by {actor}"[:1000], expected=(HALTED,)):
            raise OnboardingError("rollout_state_conflict", f"rollout {rollout_id} is {rollout.state}, not halted")
        self.store.start_wave(rollout_id, rollout.current_wave + 1)
        self._send({"rolloutId": rollout_id}, 0)
        return self._rollout(rollout_id)

    def rollback(self, rollout_id: str, actor: str) -> Rollout | None:
        """Put the previous template version back (its kept copy, If-Match the blob's ETag) and roll it out."""
        rollout = self._rollout(rollout_id)
        if rollout.kind not in ("template", "rollback") or rollout.template is None:
            raise OnboardingError("rollout_state_conflict",
                                  f"rollout {rollout_id} is a {rollout.kind} change: change the override row back")
        if rollout.previous_version is None:
            raise OnboardingError("rollout_state_conflict", f"rollout {rollout_id} records no previous version")
        kept = self.setup.templates.version(rollout.template, rollout.previous_version)
        if kept is None:
            raise OnboardingError("unknown_template", f"version {rollout.previous_version} of {rollout.template} "
                                                      "is not kept (versions/ in the templates container)")
        template, raw = kept
        if not self.store.set_state(rollout_id, ROLLED_BACK, "rolled_back", f"rolled back by {actor}"[:1000],
                                    expected=(RUNNING, HALTED, COMPLETED)):
            raise OnboardingError("rollout_state_conflict", f"rollout {rollout_id} is {rollout.state}")
        etag = self.setup.templates.etag(rollout.template)
        new_etag = self.setup.templates.replace(rollout.template, raw, etag)
        restored = Template(template.name, template.document, template.version, new_etag)
        return self._start_template("rollback", restored, raw, actor)

    # -- the periodic check ----------------------------------------------------------------------------------
    def check(self, actor: str = "timer:check_config_changes") -> list[Rollout]:
        """Override rows changed since the last one seen, or deleted since the last check, start rollouts (the
        first run records a baseline), and running rollouts nobody advanced lately are queued again."""
        started: list[Rollout] = []
        rows = self.setup.overrides.changed_rows()
        seen = self.store.latest_source_etag("overrides", OVERRIDES_SOURCE)
        stamps = {(r["facility_code"], r["sensor_type"]): _stamp(r["updated_at"]) for r in rows}
        latest = max(stamps.values(), default="")
        keys = self.store.override_keys()
        known = keys.seen()
        found = override_changes(stamps, known, seen)
        if seen is None:
            self.store.create(self._new_id(), "overrides", None, None, OVERRIDES_SOURCE, latest or "none", None, None,
                              actor, COMPLETED, None, "baseline: override rows as found")
        else:
            for facility, sensor_type, stamp in found.changed:
                if _FACILITY.fullmatch(str(facility)):
                    rollout = self.start_from_overrides(facility, sensor_type, stamp, actor)
                    if rollout is not None:
                        started.append(rollout)
        # A deleted row: its sensors go back to template (+) the facility's remaining rows. The source's ETag names
        # the deletion (the stamp last seen), so a second check starts nothing twice.
        for facility, sensor_type, stamp in found.deleted:
            if _FACILITY.fullmatch(str(facility)):
                rollout = self.start_from_overrides(facility, sensor_type, f"deleted:{stamp}"[:64], actor)
                if rollout is not None:
                    started.append(rollout)
        keys.record(stamps, known)
        if seen is not None:
            if latest > seen:
                self.store.create(self._new_id(), "overrides", None, None, OVERRIDES_SOURCE, latest, None, None,
                                  actor, COMPLETED, None, "watermark")
        stale = times.utc_now().replace(tzinfo=None) - _seconds(max(60.0, 4 * self.policy.ack_poll_s))
        for rollout in self.store.open_rollouts():
            if rollout.updated_at is not None and rollout.updated_at.replace(tzinfo=None) < stale:
                self._send({"rolloutId": rollout.rollout_id}, 0)
        return started

    def status(self, rollout_id: str) -> dict[str, Any]:
        rollout = self._rollout(rollout_id)
        counts = self.store.wave_counts(rollout_id)
        devices = self.store.devices(rollout_id)
        return {**rollout.as_dict(),
                "waves": [{"wave": w, "canary": w == 0, "sensors": sum(c.values()), "states": dict(sorted(c.items()))}
                          for w, c in sorted(counts.items())],
                "failed": {d.device_id: d.reason for d in devices if d.state == FAILED}}


def _stamp(value: Any) -> str:
    parsed = times.parse_utc(value)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if parsed else str(value)


def _seconds(value: float):
    import datetime as dt

    return dt.timedelta(seconds=value)


def message(rollout_id: str) -> str:
    return json.dumps({"rolloutId": rollout_id})
