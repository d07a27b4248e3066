"""Twin setup's own app settings, read through the shared Settings accessors (validated at first use).

| setting | default | meaning |
|---|---|---|
| TEMPLATES_CONTAINER | sensor-configurations | Blob container of `{template}-sensor.json` (shared setting) |
| DEVICE_CONFIGURATIONS_CONTAINER | device-configurations | where oversized configurations go |
| IOT_HUB_NAMES | (derived) | `hubName=hostName,...`: the hub name Event Grid sends -> a configured host |
| TWIN_TEMPLATE_CACHE_SECONDS | 60 | how long a template is used before a conditional GET revalidates it |
| TWIN_OVERRIDES_CACHE_SECONDS | 60 | how long a facility's overrides are cached |
| TWIN_DESIRED_LIMIT_BYTES | 32768 | IoT Hub's limit on properties.desired (8192 on hubs that still have it) |
| TWIN_DESIRED_BUDGET_BYTES | 24576 | the share twin setup may fill; the rest is left to other writers |
| TWIN_MAX_DEPTH | 10 | IoT Hub's maximum object depth in a twin section |
| TWIN_TEMPLATE_MAX_BYTES | 262144 | a template blob larger than this is refused |
| TWIN_ESSENTIAL_SECTIONS | telemetry,firmware,diagnostics | kept in the twin when the rest goes to Blob |
| TWIN_RETRY_ATTEMPTS | 4 | attempts per IoT Hub call on 429/503/timeouts before giving up |
| TWIN_RETRY_BASE_SECONDS | 0.5 | first backoff when the hub sends no Retry-After (doubles, jittered) |
| TWIN_RETRY_BUDGET_SECONDS | 20 | total waiting per event; Event Grid gives a webhook 30 s |
| TWIN_CONFLICT_ATTEMPTS | 5 | re-read-and-retry rounds after 412 Precondition Failed |
| IOT_HUB_TIMEOUT_SECONDS | 10 | (shared) connect/read timeout of one IoT Hub call |
| ROLLOUT_CANARY_SHARE | 0.1 | share of a rollout's sensors in its first wave, the canary |
| ROLLOUT_CANARY_MIN | 1 | smallest canary |
| ROLLOUT_CANARY_MAX_FAILURES | 0 | failed canary writes tolerated before the rollout halts |
| ROLLOUT_WAVE_SIZE | 500 | sensors per wave after the canary |
| ROLLOUT_WRITES_PER_SECOND | 10 | twin writes per second per hub (S1: 50/s/unit, shared with DeviceCreated) |
| ROLLOUT_ACK_TIMEOUT_SECONDS | 120 | how long canary sensors have to report the new configuration hash |
| ROLLOUT_ACK_POLL_SECONDS | 5 | delay between acknowledgement checks (the queue message's visibility delay) |
| ROLLOUT_QUEUE | config-rollouts | the queue that advances rollouts |
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.config import SettingError, Settings
from shared.retry import RetryPolicy
from twin_setup.rollout import RolloutPolicy

# IoT Hub's fixed twin rules ("Tags and properties format"): not settings, the service does not vary them.
MAX_KEY_BYTES = 1024
MAX_STRING_BYTES = 4 * 1024
MIN_INT = -4503599627370496
MAX_INT = 4503599627370495


@dataclass(frozen=True)
class TwinLimits:
    desired_bytes: int = 32 * 1024
    budget_bytes: int = 24 * 1024
    max_depth: int = 10
    max_key_bytes: int = MAX_KEY_BYTES
    max_string_bytes: int = MAX_STRING_BYTES


@dataclass(frozen=True)
class TwinSetupSettings:
    templates_container: str = "sensor-configurations"
    configurations_container: str = "device-configurations"
    hub_names: tuple[tuple[str, str], ...] = ()  # (hub name, host name), explicit mapping
    hub_hosts: tuple[str, ...] = ()
    template_ttl_s: float = 60.0
    overrides_ttl_s: float = 60.0
    limits: TwinLimits = TwinLimits()
    template_max_bytes: int = 256 * 1024
    essential_sections: tuple[str, ...] = ("telemetry", "firmware", "diagnostics")
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    conflict_attempts: int = 5
    hub_timeout_s: float = 10.0
    rollout: RolloutPolicy = field(default_factory=RolloutPolicy)
    rollout_queue: str = "config-rollouts"


def _pairs(settings: Settings, name: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in (settings.get(name) or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SettingError(f"app setting {name}: expected hubName=hostName, got {item.strip()!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def _int(settings: Settings, name: str, default: int, minimum: int) -> int:
    value = settings.number(name, default, minimum)
    if value != int(value):
        raise SettingError(f"app setting {name} must be a whole number, got {value}")
    return int(value)


def load(settings: Settings, hub_hosts: list[str] | None = None) -> TwinSetupSettings:
    """Read and validate every twin setup setting (raises SettingError naming the variable)."""
    limit = _int(settings, "TWIN_DESIRED_LIMIT_BYTES", 32 * 1024, 1024)
    budget = _int(settings, "TWIN_DESIRED_BUDGET_BYTES", min(24 * 1024, limit), 512)
    if budget > limit:
        raise SettingError(f"app setting TWIN_DESIRED_BUDGET_BYTES ({budget}) must not exceed "
                           f"TWIN_DESIRED_LIMIT_BYTES ({limit})")
    depth = _int(settings, "TWIN_MAX_DEPTH", 10, 2)
    sections = tuple(s.strip() for s in (settings.get("TWIN_ESSENTIAL_SECTIONS") or
                                         "telemetry,firmware,diagnostics").split(",") if s.strip())
    retry = RetryPolicy(
        attempts=_int(settings, "TWIN_RETRY_ATTEMPTS", 4, 1),
        base_s=settings.number("TWIN_RETRY_BASE_SECONDS", 0.5),
        budget_s=settings.number("TWIN_RETRY_BUDGET_SECONDS", 20),
    )
    return TwinSetupSettings(
        templates_container=settings.templates_container,
        configurations_container=settings.get("DEVICE_CONFIGURATIONS_CONTAINER", "device-configurations") or "",
        hub_names=_pairs(settings, "IOT_HUB_NAMES"),
        hub_hosts=tuple(hub_hosts if hub_hosts is not None else settings.iot_hub_host_names),
        template_ttl_s=settings.number("TWIN_TEMPLATE_CACHE_SECONDS", 60),
        overrides_ttl_s=settings.number("TWIN_OVERRIDES_CACHE_SECONDS", 60),
        limits=TwinLimits(desired_bytes=limit, budget_bytes=budget, max_depth=depth),
        template_max_bytes=_int(settings, "TWIN_TEMPLATE_MAX_BYTES", 256 * 1024, 1024),
        essential_sections=sections,
        retry=retry,
        conflict_attempts=_int(settings, "TWIN_CONFLICT_ATTEMPTS", 5, 1),
        hub_timeout_s=settings.iot_hub_timeout_s,
        rollout=load_rollout_policy(settings),
        rollout_queue=settings.get("ROLLOUT_QUEUE", "config-rollouts") or "config-rollouts",
    )


def load_rollout_policy(settings: Settings) -> RolloutPolicy:
    share = settings.number("ROLLOUT_CANARY_SHARE", 0.1)
    if not 0 < share <= 1:
        raise SettingError(f"app setting ROLLOUT_CANARY_SHARE must be in (0, 1], got {share}")
    return RolloutPolicy(
        canary_share=share,
        canary_min=_int(settings, "ROLLOUT_CANARY_MIN", 1, 1),
        wave_size=_int(settings, "ROLLOUT_WAVE_SIZE", 500, 1),
        writes_per_second=settings.number("ROLLOUT_WRITES_PER_SECOND", 10, 0.1),
        ack_timeout_s=settings.number("ROLLOUT_ACK_TIMEOUT_SECONDS", 120),
        ack_poll_s=settings.number("ROLLOUT_ACK_POLL_SECONDS", 5, 0.5),
        canary_max_failures=_int(settings, "ROLLOUT_CANARY_MAX_FAILURES", 0, 0),
    )
