"""Simulated sensors on demand: `python -m local.fleet run --facility FAC03 --type temp --count 20`.

Against a running stack (`make run`): each sensor is manufactured through the factory path (sign_csr with the local
partner, local/fleet/rollout.py Factory), powered on through the DPS simulator as the demo builds it
(local/fleet/scenario.py), waits for its configuration, and then stays online until stopped, as the reference
firmware does: it long-polls its twin for desired changes, applies each configuration (fetching the full document
when it was offloaded to Blob and checking it against configurationHash) and reports it
(reported.configuration {hash, desiredVersion, appliedAt}: the acknowledgement a rollout's canary waits for), and
sends a telemetry message every --telemetry-seconds. Only SimulatedSensor's public API is used.

`change_template_and_wait(...)` uploads a template to the templates container and waits for its rollout and the
given sensors' twins: the demo's mid-run template change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from local.fleet.device import SimulatedSensor
from local.fleet.plan import PlannedDevice
from local.fleet.rollout import DeviceOutcome, onboard, run_parallel
from local.json_client import HttpError
from shared.identity import format_device_id

log = logging.getLogger("local.fleet.live")


def _utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LiveState:
    applied: int = 0  # configurations applied since power-on (the first one included)
    hash: str | None = None
    version: int = 0
    errors: list[str] = field(default_factory=list)


class LiveSensor:
    """One configured sensor that keeps following its twin until stop is set."""

    def __init__(self, sensor: SimulatedSensor, telemetry_s: float = 30.0, fetch=None):
        self.sensor = sensor
        self.state = LiveState()
        self._telemetry_s = telemetry_s
        self._fetch = fetch  # url -> bytes, for offloaded configurations

    def apply(self, desired: dict, version: int) -> bool:
        """Apply desired properties as the firmware does; report the configuration. False if nothing to apply."""
        onboarding = desired.get("onboarding") or {}
        config_hash = onboarding.get("configurationHash")
        if onboarding.get("state") != "configured" or not config_hash or config_hash == self.state.hash:
            return False
        url = onboarding.get("configurationUrl")
        if url:
            if self._fetch is None:
                self.state.errors.append(f"offloaded configuration {url} and no way to fetch it")
                return False
            body = self._fetch(url)
            if hashlib.sha256(body).hexdigest() != config_hash:
                self.state.errors.append(f"configuration at {url} does not match {config_hash}")
                return False
        self.sensor.connection().report({"configuration": {"hash": config_hash, "desiredVersion": version,
                                                           "appliedAt": _utc()}})
        self.state.hash, self.state.version = config_hash, version
        self.state.applied += 1
        return True

    def follow(self, stop: threading.Event, poll_s: int = 20) -> None:
        link = self.sensor.connection()
        next_telemetry = time.monotonic()
        while not stop.is_set():
            try:
                twin = link.twin(desired_version_above=self.state.version, timeout_s=poll_s)
                desired = twin["desired"]
                version = desired.get("$version", self.state.version)
                if not self.apply(desired, version):
                    self.state.version = max(self.state.version, version)
                if time.monotonic() >= next_telemetry:
                    link.send_event({"temperature": round(random.uniform(18, 24), 2), "at": _utc()})
                    next_telemetry = time.monotonic() + self._telemetry_s
            except HttpError as exc:
                self.state.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                stop.wait(2)
        self.sensor.release()


class LiveFleet:
    """count sensors of one type at one facility, onboarded and then following their twins on threads."""

    def __init__(self, services, state_dir: Path, facility: str, type_code: str, count: int,
                 seed: int | None = None, workers: int = 16, telemetry_s: float = 30.0,
                 configure_timeout_s: float = 120):
        from local.fleet.scenario import Scenario, ScenarioOptions

        self.scenario = Scenario(services, state_dir, ScenarioOptions(workers=workers))
        rng = random.Random(seed)
        self.devices = [PlannedDevice(format_device_id(type_code, facility, f"SN{rng.randrange(10**8):08d}"),
                                      facility, type_code) for _ in range(count)]
        self.workers = workers
        self.telemetry_s = telemetry_s
        self.configure_timeout_s = configure_timeout_s
        self.outcomes: list[DeviceOutcome] = []
        self.live: list[LiveSensor] = []
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> list[DeviceOutcome]:
        sensors = {d.device_id: SimulatedSensor(d.device_id) for d in self.devices}
        run_parallel(self.devices, lambda d: self.scenario.factory.manufacture(sensors[d.device_id]), self.workers,
                     "manufacture")
        dps = self.scenario.dps([])
        self.outcomes = run_parallel(
            self.devices, lambda d: onboard(d, sensors[d.device_id], dps, self.scenario.hub_ca,
                                            self.configure_timeout_s), self.workers, "power-on")
        for outcome in self.outcomes:
            if outcome.status != "configured":
                continue
            live = LiveSensor(outcome.sensor, self.telemetry_s)
            applied = outcome.sensor.applied or {}
            live.state.hash = (applied.get("onboarding") or {}).get("configurationHash")
            live.state.applied = 1
            self.live.append(live)
            thread = threading.Thread(target=live.follow, args=(self.stop_event,), daemon=True,
                                      name=f"live-{outcome.device.device_id}")
            thread.start()
            self._threads.append(thread)
        return self.outcomes

    def stop(self, timeout_s: float = 30) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def summary(self) -> dict:
        return {"sensors": len(self.devices), "online": sum(1 for t in self._threads if t.is_alive()),
                "configured": sum(1 for o in self.outcomes if o.status == "configured"),
                "refused": {o.device.device_id: o.reason for o in self.outcomes if o.status != "configured"},
                "applied": {s.sensor.device_id: s.state.applied for s in self.live},
                "errors": {s.sensor.device_id: s.state.errors[-3:] for s in self.live if s.state.errors}}


def change_template_and_wait(services, template: str, document: dict, devices: Iterable[tuple[str, str]],
                             timeout_s: float = 180) -> dict:
    """Upload `document` as {template}-sensor.json, then wait until its rollout is no longer running and every
    (hub, device ID) in `devices` carries the configuration that rollout wrote. Returns the rollout's status (with
    "twinsConfigured": how many of the devices carry the new template version)."""
    from twin_setup.configuration import template_blob_name
    from twin_setup.rollouts import RolloutStore

    container = services.blob_service.get_container_client(services.settings.templates_container)
    answer = container.get_blob_client(template_blob_name(template)).upload_blob(
        json.dumps(document, indent=2).encode(), overwrite=True)
    etag = answer["etag"]
    store = RolloutStore(services.database)
    hub = services.iothub()
    devices = list(devices)
    version = document.get("templateVersion")
    deadline = time.monotonic() + timeout_s
    rollout = None
    while time.monotonic() < deadline:
        row = services.database.fetch_one("SELECT rollout_id FROM config_rollouts WHERE source = ? AND "
                                          "source_etag = ?", [template_blob_name(template), etag])
        rollout = store.get(row["rollout_id"]) if row else None
        if rollout is not None and rollout.state != "running":
            break
        time.sleep(1)
    configured = 0
    while time.monotonic() < deadline:
        twins = [hub.get_twin(h, d) for h, d in devices]
        configured = sum(1 for t in twins if t is not None and
                         (t.tags.get("onboarding") or {}).get("templateVersion") == version)
        if configured == len(devices) or (rollout is not None and rollout.state in ("halted", "rejected")):
            break
        time.sleep(1)
    if rollout is None:
        return {"rolloutId": None, "state": "not started", "sourceEtag": etag, "twinsConfigured": configured}
    from twin_setup.wiring import build_changes

    status = build_changes(services).status(rollout.rollout_id)
    return {**status, "twinsConfigured": configured}


def services_from_settings(settings_path: Path):
    """The app's Services with local.settings.json's values (this process acts as factory, DPS and devices)."""
    from shared.bootstrap import Services
    from shared.config import Settings

    values = json.loads(settings_path.read_text())["Values"]
    os.environ.update(values)
    return Services(Settings())
