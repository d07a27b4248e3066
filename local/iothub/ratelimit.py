"""IoT Hub's operation throttles as token buckets, so code that ignores 429 and Retry-After fails locally too.

Figures are the S1 column of "IoT Hub quotas and throttling": identity registry operations 100/min/unit,
queries 20/min/unit, configurations and edge deployments 20/min/unit, twin reads 100/s and twin updates
50/s (per hub, not per unit, on S1), device-to-cloud sends 12/s/unit but at least 100/s. A bucket holds what
the throttle allows in its own window (a minute or a second), which approximates IoT Hub's traffic shaping of
short bursts.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from local.iothub.config import RateLimits

REGISTRY = "registry"
TWIN_READ = "twin_read"
TWIN_UPDATE = "twin_update"
QUERY = "query"
CONFIGURATION = "configuration"
D2C_SEND = "d2c_send"

# operation class -> (allowed per window, window seconds, scales with units)
S1_THROTTLES: dict[str, tuple[float, float, bool]] = {
    REGISTRY: (100, 60, True),
    QUERY: (20, 60, True),
    CONFIGURATION: (20, 60, True),
    TWIN_READ: (100, 1, False),
    TWIN_UPDATE: (50, 1, False),
    D2C_SEND: (12, 1, True),
}
# operation class -> the least a hub allows whatever its units ("100/sec or 12/sec/unit, whichever is higher")
S1_MINIMUMS: dict[str, float] = {D2C_SEND: 100}
# The operation type names IoT Hub puts in its throttling message.
OPERATION_NAMES = {
    REGISTRY: "RegistryOperations",
    QUERY: "Query",
    CONFIGURATION: "Configurations",
    TWIN_READ: "TwinRead",
    TWIN_UPDATE: "TwinUpdate",
    D2C_SEND: "DeviceToCloudSends",
}


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token; 0 when granted, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic):
        self._limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._buckets: dict[str, TokenBucket] = {}
        for op, (allowed, window, per_unit) in S1_THROTTLES.items():
            allowed = max(allowed * (limits.units if per_unit else 1), S1_MINIMUMS.get(op, 0))
            capacity = max(1.0, allowed * limits.multiplier)
            self._buckets[op] = TokenBucket(capacity / window, capacity, capacity, now)

    def check(self, operation: str) -> int | None:
        """None when the call may proceed, else the whole seconds to put in Retry-After."""
        if not self._limits.enabled:
            return None
        with self._lock:
            wait = self._buckets[operation].take(self._clock())
        return None if wait == 0 else max(1, math.ceil(wait))
