"""A configuration rollout's decisions: waves, pacing, the canary's verdict, the next step. Pure.

A rollout takes the sensors a change affects (twin_setup/diff.py) and writes them in waves through twin setup's
own writer (TwinSetup.reconfigure: the same plan, conditional PATCH and configuration hash as on DeviceCreated):
wave 0 is the canary, a share of the sensors spread over facilities; the rest follow in waves of at most
`wave_size`. Writes are paced per hub to a share of the hub's twin-update throttle (docs/contracts.md 3.4: S1
50/s/unit, shared with twin setup's DeviceCreated writes and the lifecycle). After the canary, the rollout waits
for its sensors to acknowledge (reported.configuration.hash equal to the hash written: the simulated firmware and
the funnel's contract) where they can: a sensor that never reported a configuration counts on its write result
alone. A failed write, or a sensor that does not acknowledge in time, halts the rollout; an operator resumes it or
rolls it back to the previous template version.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# device states in a rollout
PENDING, WRITTEN, UNCHANGED, ACKNOWLEDGED, FAILED, GONE = (
    "pending", "written", "unchanged", "acknowledged", "failed", "gone")
DONE_STATES = frozenset((WRITTEN, UNCHANGED, ACKNOWLEDGED, FAILED, GONE))
# rollout states
REJECTED, RUNNING, HALTED, COMPLETED, ROLLED_BACK = "rejected", "running", "halted", "completed", "rolled_back"
OPEN_STATES = frozenset((RUNNING, HALTED))


@dataclass(frozen=True)
class RolloutPolicy:
    canary_share: float = 0.1
    canary_min: int = 1
    wave_size: int = 500
    writes_per_second: float = 10.0  # per hub
    ack_timeout_s: float = 60.0
    ack_poll_s: float = 2.0
    canary_max_failures: int = 0


@dataclass(frozen=True)
class Target:
    device_id: str
    hub: str
    facility: str


def _spread_key(salt: str, target: Target) -> str:
    return hashlib.sha256(f"{salt}/{target.device_id}".encode()).hexdigest()


def plan_waves(targets: Sequence[Target], policy: RolloutPolicy, salt: str) -> list[list[Target]]:
    """Wave 0 the canary (ceil(share * n), at least canary_min, taken round-robin over facilities so that one
    plant does not make up the canary), then the rest in waves of wave_size. Deterministic for a salt."""
    if not targets:
        return []
    by_facility: dict[str, list[Target]] = {}
    for target in sorted(targets, key=lambda t: _spread_key(salt, t)):
        by_facility.setdefault(target.facility, []).append(target)
    ordered: list[Target] = []
    queues = [by_facility[f] for f in sorted(by_facility)]
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    size = min(len(ordered), max(policy.canary_min, math.ceil(policy.canary_share * len(ordered))))
    waves = [ordered[:size]]
    rest = ordered[size:]
    step = max(1, policy.wave_size)
    waves.extend(rest[start:start + step] for start in range(0, len(rest), step))
    return waves


class Pacer:
    """At most `rate` writes per second to each hub: wait(hub) sleeps until that hub's next slot."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next: dict[str, float] = {}

    def wait(self, hub: str) -> None:
        now = self._clock()
        slot = max(now, self._next.get(hub, now))
        if slot > now:
            self._sleep(slot - now)
        self._next[hub] = slot + self._interval


@dataclass(frozen=True)
class DeviceProgress:
    device_id: str
    state: str
    ack_capable: bool = False  # the sensor reported a configuration before this rollout


@dataclass(frozen=True)
class Verdict:
    outcome: str  # pass | wait | fail
    reason: str | None = None
    detail: str | None = None


def canary_verdict(devices: Sequence[DeviceProgress], waited_s: float, policy: RolloutPolicy) -> Verdict:
    """The canary's verdict once its writes are done: fail on more failed writes than allowed; pass when every
    sensor that can acknowledge has; wait while some have not and the acknowledgement time has not run out."""
    failed = [d.device_id for d in devices if d.state == FAILED]
    if len(failed) > policy.canary_max_failures:
        return Verdict("fail", "canary_failed", f"{len(failed)} of {len(devices)} canary writes failed: "
                                                 f"{', '.join(sorted(failed)[:5])}")
    waiting = [d.device_id for d in devices if d.state == WRITTEN and d.ack_capable]
    if not waiting:
        return Verdict("pass")
    if waited_s < policy.ack_timeout_s:
        return Verdict("wait")
    return Verdict("fail", "canary_not_acknowledged",
                   f"{len(waiting)} of {len(devices)} canary sensors did not acknowledge within "
                   f"{policy.ack_timeout_s:g}s: {', '.join(sorted(waiting)[:5])}")


@dataclass(frozen=True)
class Step:
    action: str  # write | verify | complete | idle
    wave: int | None = None


def next_step(state: str, current_wave: int, wave_count: int, wave_states: dict[int, list[str]],
              canary_passed: bool) -> Step:
    """What advancing a rollout does now. wave_states: device states per wave."""
    if state != RUNNING:
        return Step("idle")
    for wave in range(current_wave, wave_count):
        states = wave_states.get(wave, [])
        if any(s == PENDING for s in states):
            return Step("write", wave)
        if wave == 0 and not canary_passed:
            return Step("verify", 0)
    return Step("complete")


def ack_capable(reported: dict) -> bool:
    """A sensor that reports its configuration (reported.configuration.hash) can acknowledge one."""
    configuration = reported.get("configuration") if isinstance(reported, dict) else None
    return isinstance(configuration, dict) and isinstance(configuration.get("hash"), str)


def acknowledged(reported: dict, config_hash: str | None) -> bool:
    configuration = reported.get("configuration") if isinstance(reported, dict) else None
    return bool(config_hash) and isinstance(configuration, dict) and configuration.get("hash") == config_hash
