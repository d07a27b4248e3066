"""Azure operations per sensor, by step of the rollout, as the product counted them (shared/usage.py).

Every process of the stack writes its tally under one directory; the demo reads the totals when a step starts
(a tally is written every half second, so a step's first or last half second may count in its neighbour) and after
the run. Figures: the product's calls (SQL round trips, Key Vault, Blob, Queue, IoT Hub requests, function
invocations, counted in the product's adapters and the Functions host) and, apart, what reached the hub emulators
by throttle class (hub.*: the product's calls plus the devices' and DPS's).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared import usage

PRODUCT_PROCESSES = {"host", "iothub"}
STEPS = ("manufacture", "power-on", "after-rollout")
# How the summary groups the kinds: (label, prefix or exact kind)
GROUPS = [("SQL round trips", "sql"), ("Key Vault requests", "keyvault"), ("Blob reads", "blob.read"),
          ("Blob writes", "blob.write"), ("queue messages sent", "queue.send"),
          ("queue receives/deletes", ("queue.receive", "queue.delete", "queue.other")),
          ("IoT Hub requests", "iothub."), ("function invocations", "function.")]


class UsageMeter:
    """Snapshots of the stack's counts when each step starts; the processes' own (this one's) left out."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.marks: list[tuple[str, dict[str, int]]] = []

    def read(self) -> dict[str, int]:
        # The product runs in the Functions host's workers; the hubs count what reached them. The other stand-ins
        # (Blob events poller, Key Vault, DPS) and this process (DPS, the factory, the devices) are not the product.
        return usage.read_counts(self.directory, PRODUCT_PROCESSES, exclude_pids={os.getpid()})

    def mark(self, step: str) -> None:
        self.marks.append((step, self.read()))

    def finish(self) -> dict[str, dict[str, int]]:
        """Counts per step: from each mark to the next, the last one to now (after the tallies were written)."""
        time.sleep(usage.FLUSH_S * 3)
        ends = [*self.marks[1:], ("end", self.read())]
        return {step: _minus(after, before) for (step, before), (_, after) in zip(self.marks, ends, strict=True)}


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}


def _group(counts: dict[str, int], match) -> int:
    kinds = match if isinstance(match, tuple) else (match,)
    return sum(v for k, v in counts.items() for m in kinds if (k.startswith(m) if m.endswith(".") else k == m))


def per_sensor(steps: dict[str, dict[str, int]], manufactured: int, configured: int) -> dict:
    """Per sensor: manufacture over the sensors manufactured, the others over the sensors configured; onboarding =
    power-on + after-rollout (the storm, the renewals and the funnel's timer runs)."""
    onboarding: dict[str, int] = {}
    for step in ("power-on", "after-rollout"):
        for k, v in steps.get(step, {}).items():
            onboarding[k] = onboarding.get(k, 0) + v
    windows = {**{s: steps.get(s, {}) for s in STEPS}, "onboarding": onboarding}

    def share(step: str, n: int) -> float:
        return round(n / (manufactured if step == "manufacture" else configured or 1), 3) if n else 0.0

    out = {}
    for step, counts in windows.items():
        product = {k: v for k, v in counts.items() if not k.startswith("hub.")}
        out[step] = {"groups": {label: share(step, _group(product, m)) for label, m in GROUPS},
                     "kinds": {k: share(step, v) for k, v in product.items()},
                     "reachedHubs": {k.removeprefix("hub."): share(step, v) for k, v in counts.items()
                                     if k.startswith("hub.")}}
    return {"sensors": {"manufactured": manufactured, "configured": configured}, "perSensor": out, "totals": steps}


def summary_lines(data: dict) -> list[str]:
    """Lines for the terminal summary: per step, the groups per sensor, then the IoT Hub and function detail."""
    if not data:
        return []
    per = data["perSensor"]
    lines = ["Azure operations per sensor (counted by the product, shared/usage.py; onboarding = power-on + storm, "
             "renewals and funnel runs after it):"]
    width = max(len(label) for label, _ in GROUPS) + 4
    lines.append(f"  {'':<{width}}" + "".join(f"{s:>15}" for s in (*STEPS, "onboarding")))
    for label, _ in GROUPS:
        lines.append(f"  {label:<{width}}" + "".join(f"{per[s]['groups'][label]:>15g}"
                                                     for s in (*STEPS, "onboarding")))
    detail = per["onboarding"]["kinds"]
    for prefix in ("iothub.", "function."):
        parts = [f"{k.removeprefix(prefix)} {v:g}" for k, v in detail.items() if k.startswith(prefix)]
        if parts:
            lines.append(f"  onboarding {prefix.rstrip('.')}: " + ", ".join(parts))
    hubs = per["onboarding"]["reachedHubs"]
    if hubs:
        lines.append("  reached the hub emulators per sensor, by S1 throttle class (product + devices + DPS): "
                     + ", ".join(f"{k} {v:g}" for k, v in hubs.items()))
    return lines
