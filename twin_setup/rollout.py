"""A configuration rollout's decisions: waves, pacing, the canary's verdict, the next step. Pure.

A rollout takes the sensors a change affects (twin_setup/diff.py) and writes them in waves through twin setup's
own writer (TwinSetup.reconfigure: the same plan, conditional PATCH and configuration hash as on DeviceCreated):
wave 0 is the canary, a share of the sensors spread over facilities; the rest follow in waves of at most
`wave_size`. Writes are paced per hub to a share of the hub's twin-update throttle (docs/contracts.md 3.4: S1
50/s/unit, shared with twin setup's DeviceCreated writes and the lifecycle). After the canary, the rollout waits
for its sensors to acknowledge (reported.configuration.hash equal to the hash written: the simulated firmware and
the funnel's contract) where they can: a sensor that never reported a configuration counts on its write result
alone; every later wave is checked the same way before the next one starts. A failed canary write, or a sensor of
any wave that does not acknowledge in time, halts the rollout; an operator resumes it or rolls it back to the
previous template version. After the last wave a sweep (once the caches of every worker have expired) writes the
sensors twin setup configured meanwhile from a cached older source (a final wave of late joiners).
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
    waited_s: float | None = None  # since its write (None: the wave's waiting time applies)


@dataclass(frozen=True)
class Verdict:
    outcome: str  # pass | wait | fail
    reason: str | None = None
    detail: str | None = None


def wave_verdict(devices: Sequence[DeviceProgress], waited_s: float, policy: RolloutPolicy,
                 canary: bool = True) -> Verdict:
    """A wave's verdict once its writes are done: the canary fails on more failed writes than allowed (a later
    wave's failed writes are recorded and reported, not halted on); every wave passes when each sensor that can
    acknowledge has, waits while some have not and their acknowledgement time has not run out, fails after."""
    label = "canary" if canary else "wave"
    failed = [d.device_id for d in devices if d.state == FAILED]
    if canary and len(failed) > policy.canary_max_failures:
        return Verdict("fail", "canary_failed", f"{len(failed)} of {len(devices)} canary writes failed: "
                                                 f"{', '.join(sorted(failed)[:5])}")
    waiting = [d for d in devices if d.state == WRITTEN and d.ack_capable]
    if not waiting:
        return Verdict("pass")
    late = sorted(d.device_id for d in waiting
                  if (d.waited_s if d.waited_s is not None else waited_s) >= policy.ack_timeout_s)
    if not late:
        return Verdict("wait")
    return Verdict("fail", f"{label}_not_acknowledged",
                   f"{len(late)} of {len(devices)} {label} sensors did not acknowledge within "
                   f"{policy.ack_timeout_s:g}s: {', '.join(late[:5])}")


def canary_verdict(devices: Sequence[DeviceProgress], waited_s: float, policy: RolloutPolicy) -> Verdict:
    return wave_verdict(devices, waited_s, policy, canary=True)


@dataclass(frozen=True)
class Step:
    action: str  # write | verify | sweep | complete | idle
    wave: int | None = None


def next_step(state: str, current_wave: int, wave_count: int, wave_states: dict[int, list[str]],
              canary_passed: bool | None = None, swept: bool = True) -> Step:
    """What advancing a rollout does now. wave_states: device states per wave. Waves before current_wave have
    passed their verdict; the current one is written, then verified; after the last, the sweep, then done.
    (canary_passed: kept for callers; current_wave > 0 says the same.)"""
    if state != RUNNING:
        return Step("idle")
    if current_wave < wave_count:
        if any(s == PENDING for s in wave_states.get(current_wave, [])):
            return Step("write", current_wave)
        return Step("verify", current_wave)
    return Step("complete") if swept else Step("sweep")


def ack_capable(reported: dict) -> bool:
    """A sensor that reports its configuration (reported.configuration.hash) can acknowledge one."""
    configuration = reported.get("configuration") if isinstance(reported, dict) else None
    return isinstance(configuration, dict) and isinstance(configuration.get("hash"), str)


def acknowledged(reported: dict, config_hash: str | None) -> bool:
    configuration = reported.get("configuration") if isinstance(reported, dict) else None
    return bool(config_hash) and isinstance(configuration, dict) and configuration.get("hash") == config_hash


# -- override rows: changes and deletions (the periodic check) -------------------------------------------------
@dataclass(frozen=True)
class OverrideChanges:
    changed: list[tuple[str, str, str]]  # (facility, sensor type, updated_at stamp) newer than the watermark
    deleted: list[tuple[str, str, str]]  # (facility, sensor type, stamp last seen) no longer in the table


def override_changes(current: dict[tuple[str, str], str], seen: dict[tuple[str, str], str],
                     watermark: str | None) -> OverrideChanges:
    """Rows changed since the watermark (updated_at), and rows deleted since the last check: keys in `seen` (the
    key set recorded by the last check) that are not in `current`. A DELETE leaves no updated_at to compare, so the
    key set is what shows it; with no watermark yet (the first run) nothing counts as changed."""
    changed = [] if watermark is None else [(f, t, stamp) for (f, t), stamp in sorted(current.items())
                                            if stamp > watermark]
    deleted = [(f, t, stamp) for (f, t), stamp in sorted(seen.items()) if (f, t) not in current]
    return OverrideChanges(changed, deleted)
