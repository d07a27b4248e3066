"""The demo's mid-run template change: while the plant is still powering on, an operator uploads a changed template.

The upload goes to the templates container as any operator's would; the stack's BlobCreated poller turns it into
on_template_changed, which starts a rollout (twin_setup/changes.py). Sensors installed before the change are
reconfigured in waves (each wave waits for its sensors' acknowledgement), sensors onboarded after it get the new
version directly, and the rollout's final sweep writes the few that another worker configured from its cached old
copy. The simulated firmware follows its twin: when the rollout writes a sensor, that sensor reads its desired
properties and reports the configuration it applied (SimulatedSensor.follow_desired), as a connected device would on
its desired-properties notification, and sends its next reading after the warm-up, as a running sensor keeps doing
(the funnel tells a live sensor by activity after its latest acknowledgement). At the end the drift check
(twin_setup/drift.py, read-only) must find nothing.

The template changed is the most common sensor type without a silent sensor (the funnel's incident: a silent sensor
that came back to acknowledge a change would look live to the funnel), and never the gateways (edge deployments).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from local.fleet.device import SimulatedSensor
from local.fleet.plan import PlannedDevice
from local.fleet.rollout import DeviceOutcome, Readings
from shared.identity import SENSOR_TYPES

log = logging.getLogger("local.fleet.template_change")

READY_AFTER_S = 10.0  # a configured sensor whose first reading did not go out is acknowledged after this anyway


def bump_minor(version: str) -> str:
    parts = [int(p) if p.isdigit() else 0 for p in (version or "1.0.0").split(".")[:3]] + [0, 0]
    return f"{parts[0]}.{parts[1] + 1}.0"


def choose_type(plan: list[PlannedDevice], silent: set[str]) -> str | None:
    """The most common non-gateway sensor type with no silent sensor (ties: by name)."""
    counts = Counter(d.type_code for d in plan if not d.is_gateway)
    quiet = {d.type_code for d in plan if d.device_id in silent}
    ranked = sorted((c for c in counts if c not in quiet), key=lambda c: (-counts[c], c))
    return ranked[0] if ranked else None


@dataclass
class TemplateChange:
    services: object
    type_code: str
    sensors: dict[str, SimulatedSensor]
    template: str = ""
    blob: str = ""
    version_before: str | None = None
    version_after: str | None = None
    etag: str | None = None
    uploaded_at: float | None = None  # monotonic
    rollout_id: str | None = None
    acknowledged: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _readings: Readings | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.template = SENSOR_TYPES[self.type_code]
        self.blob = f"{self.template}-sensor.json"

    # -- the operator's upload ------------------------------------------------------------------------------
    def start(self) -> None:
        """Upload the changed template (telemetry.batchSize + 1, the minor version bumped), then follow the rollout
        it starts on a thread. A failed upload is recorded (finish reports it)."""
        try:
            self._upload()
        except Exception as exc:  # noqa: BLE001 - the demo's verification reports it
            self.errors.append(f"upload of {self.blob} failed: {type(exc).__name__}: {exc}"[:300])
            return
        self._readings = Readings(workers=4)
        self._thread = threading.Thread(target=self._follow, name="template-change", daemon=True)
        self._thread.start()

    def _upload(self) -> None:
        container = self.services.blob_service.get_container_client(self.services.settings.templates_container)
        document = json.loads(container.download_blob(self.blob).readall())
        self.version_before = str(document.get("templateVersion"))
        self.version_after = bump_minor(self.version_before)
        document["templateVersion"] = self.version_after
        telemetry = document.setdefault("telemetry", {})
        telemetry["batchSize"] = int(telemetry.get("batchSize") or 1) + 1
        answer = container.get_blob_client(self.blob).upload_blob(json.dumps(document, indent=2).encode(),
                                                                  overwrite=True)
        self.etag, self.uploaded_at = answer["etag"], time.monotonic()

    # -- the firmware's side: acknowledge what the rollout wrote --------------------------------------------
    def _rollout_row(self) -> dict | None:
        sql = "SELECT rollout_id, state FROM config_rollouts WHERE source = ? AND source_etag IN (?, ?)"
        return self.services.database.fetch_one(sql, [self.blob, self.etag, self.etag.strip('"')])

    def _ready(self, sensor: SimulatedSensor) -> bool:
        """Done with onboarding: its first reading went out (the reading scheduler no longer holds its connection)."""
        configured = sensor.timeline.configured
        return sensor.readings > 0 or (configured is not None and time.monotonic() - configured > READY_AFTER_S)

    def _apply(self, sensor: SimulatedSensor) -> bool:
        try:
            applied = sensor.follow_desired()
        except Exception as exc:  # noqa: BLE001 - tried again on the next pass
            self.errors.append(f"{sensor.device_id}: {type(exc).__name__}: {exc}"[:200])
            sensor.release()
            return False
        if applied and self._readings is not None:
            self._readings.schedule(sensor)  # the next reading after the warm-up; releases the connection after
        else:
            sensor.release()
        return applied

    def _follow(self) -> None:
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="template-ack") as pool:
            while not self._stop.is_set():
                if self.rollout_id is None:
                    row = self._rollout_row()
                    self.rollout_id = row["rollout_id"] if row else None
                if self.rollout_id is not None:
                    rows = self.services.database.fetch_all(
                        "SELECT device_id FROM config_rollout_devices WHERE rollout_id = ? AND state = 'written'",
                        [self.rollout_id])
                    due = [self.sensors[r["device_id"]] for r in rows if r["device_id"] in self.sensors
                           and r["device_id"] not in self.acknowledged and self._ready(self.sensors[r["device_id"]])]
                    for sensor, applied in zip(due, pool.map(self._apply, due), strict=True):
                        if applied:
                            self.acknowledged.add(sensor.device_id)
                self._stop.wait(0.5)

    # -- the end --------------------------------------------------------------------------------------------
    def finish(self, idle_s: float = 180, limit_s: float = 1800) -> dict:
        """Wait until the rollout is no longer running (its sweep included), stop following, and say how it went.
        Gives up when the rollout made no progress (no sensor written or acknowledged, no new wave) for idle_s, or
        after limit_s: a big fleet's rollout takes as long as its waves take."""
        give_up, idle_until = time.monotonic() + limit_s, time.monotonic() + idle_s
        state, progress = "not started", None
        while self.etag is not None and time.monotonic() < min(give_up, idle_until):
            row = self._rollout_row()
            if row is not None:
                self.rollout_id, state = row["rollout_id"], row["state"]
                if state != "running":
                    break
                now = self.services.database.fetch_one(
                    "SELECT COUNT(*) AS n FROM config_rollout_devices WHERE rollout_id = ? AND state <> 'pending'",
                    [self.rollout_id])["n"], len(self.acknowledged)
                if now != progress:
                    progress, idle_until = now, time.monotonic() + idle_s
            time.sleep(1)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._readings is not None:
            self._readings.close()
        summary = {"template": self.blob, "versionBefore": self.version_before, "versionAfter": self.version_after,
                   "rolloutId": self.rollout_id, "state": state, "acknowledgedBySensors": len(self.acknowledged),
                   "ackErrors": self.errors[-3:]}
        if self.rollout_id is None:
            return summary
        from twin_setup.wiring import build_changes

        status = build_changes(self.services).status(self.rollout_id)
        summary.update(state=status["state"], reason=status["reason"], reconfigured=status["affected"],
                       waves=len(status["waves"]),
                       waveStates=[w["states"] for w in status["waves"]],
                       failed=len(status["failed"]))
        return summary

    def onboarded_directly(self, outcomes: list[DeviceOutcome]) -> int:
        """Configured sensors of the changed type that the rollout did not write: they got the new version when twin
        setup first configured them (checked on their twins)."""
        written = set()
        if self.rollout_id is not None:
            written = {r["device_id"] for r in self.services.database.fetch_all(
                "SELECT device_id FROM config_rollout_devices WHERE rollout_id = ?", [self.rollout_id])}
        hub = self.services.iothub()
        direct = 0
        for o in outcomes:
            if o.status != "configured" or o.device.type_code != self.type_code or o.device.device_id in written:
                continue
            twin = hub.get_twin(o.hub, o.device.device_id)
            if twin is not None and (twin.tags.get("onboarding") or {}).get("templateVersion") == self.version_after:
                direct += 1
        return direct


def verify(change: dict, drift: dict) -> list[str]:
    """The mid-run change's verification failures: the rollout completed and the drift check found nothing."""
    failures = []
    if change.get("state") != "completed":
        failures.append(f"template change mid-run: rollout {change.get('rolloutId')} is {change.get('state')}"
                        + (f" ({change['reason']})" if change.get("reason") else ""))
    if drift.get("drifted", 1) or drift.get("held") or drift.get("incompleteHubs"):
        failures.append(f"drift after the run: {drift.get('drifted')} sensors differ from template (+) overrides "
                        f"({drift.get('missed')} missed, {drift.get('edited')} edited), {drift.get('held')} held "
                        f"by rollouts, hubs not checked: {drift.get('incompleteHubs')}")
    return failures


def summary_line(change: dict) -> str:
    """`template change mid-run: vibration-sensor.json 1.0.0 -> 1.1.0, 456 sensors reconfigured in 2 waves, ...`"""
    if not change:
        return ""
    if "drift" not in change:
        return f"{change['template']} {change.get('state')}"
    return (f"{change['template']} {change['versionBefore']} -> {change['versionAfter']}, "
            f"{change.get('reconfigured', 0)} sensors reconfigured in {change.get('waves', 0)} waves "
            f"({change.get('state')}), {change.get('direct', 0)} onboarded with it directly, "
            f"drift {change['drift'].get('drifted')}")
