"""Settings of one emulated hub: its names, keys, limits, throttles and where its events and state go.

Every figure that Azure documents as a hub limit is a setting here, so a demo can tighten it (for example
desired properties at 8 KB, the reference user's lesson) or loosen the throttles without code changes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from local.secrets import stack_secret

DEVICE_CREATED = "Microsoft.Devices.DeviceCreated"
DEVICE_DELETED = "Microsoft.Devices.DeviceDeleted"
# The well-known policies of a new IoT hub; iothubowner is the one the stack hands out.
LOCAL_POLICIES = ("iothubowner", "service", "registryReadWrite")


@dataclass(frozen=True)
class TwinLimits:
    """IoT Hub's twin limits (device twins guide, "Tags and properties format" and "Device twin size")."""

    tags_bytes: int = 8 * 1024
    desired_bytes: int = 32 * 1024
    reported_bytes: int = 32 * 1024
    max_depth: int = 10
    max_key_bytes: int = 1024
    max_string_bytes: int = 4 * 1024


@dataclass(frozen=True)
class RateLimits:
    """S1 throttles scaled by units; multiplier > 1 loosens them for demos, enabled=False turns them off."""

    enabled: bool = True
    multiplier: float = 1.0
    units: int = 1


@dataclass(frozen=True)
class HubConfig:
    name: str  # the hub's name, as Event Grid events carry it: "iothub-west-local"
    host_name: str  # what clients put in HostName= and SAS sr=: "localhost:8441"
    state_dir: Path  # this hub's own directory (devices, configurations, pending events)
    policies: Mapping[str, str]  # shared access policy name -> base64 key
    port: int = 8441
    region: str = ""
    identity_signing_key: bytes | None = None  # accepts local managed-identity bearer tokens when set
    twin_limits: TwinLimits = field(default_factory=TwinLimits)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    event_grid_url: str | None = None  # Event Grid webhook subscriber; None: no events
    event_types: frozenset[str] = frozenset({DEVICE_CREATED, DEVICE_DELETED})
    subscription_id: str = "00000000-0000-0000-0000-00000000beef"
    resource_group: str = "rg-sensor-onboarding-local"
    event_retry_window_s: float = 24 * 3600  # Event Grid retries for up to 24 hours
    event_backoff_s: tuple[float, float] = (1.0, 60.0)  # first and longest wait between delivery attempts
    event_max_batch: int = 10  # the subscription's maxEventsPerBatch (infra/modules/device-events.bicep)
    max_body_bytes: int = 1024 * 1024
    max_page_size: int = 1000
    default_page_size: int = 100

    @property
    def resource_id(self) -> str:
        """The hub's ARM id, upper-cased as IoT Hub writes it in Event Grid `topic`."""
        return (
            f"/SUBSCRIPTIONS/{self.subscription_id}/RESOURCEGROUPS/{self.resource_group}"
            f"/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/{self.name}"
        ).upper()


def hub_names(short_or_full: str) -> tuple[str, str]:
    """'west' -> ('iothub-west-local', 'west'); 'iothub-west-local' -> itself and 'west'."""
    if short_or_full.startswith("iothub-"):
        region = short_or_full.removeprefix("iothub-").removesuffix("-local")
        return short_or_full, region
    return f"iothub-{short_or_full}-local", short_or_full


def local_hub_config(state_dir: Path, name: str, port: int, **overrides) -> HubConfig:
    """The config of one stack hub; its keys are stack secrets `iothub-{name}-{policy}` (name as given)."""
    state_dir = Path(state_dir)
    full_name, region = hub_names(name)
    policies = {p: stack_secret(state_dir, f"iothub-{name}-{p}") for p in LOCAL_POLICIES}
    identity_key = base64.b64decode(stack_secret(state_dir, "identity-signing-key"))
    values = {
        "name": full_name,
        "host_name": f"localhost:{port}",
        "state_dir": state_dir / "iothub" / full_name,
        "policies": policies,
        "port": port,
        "region": region,
        "identity_signing_key": identity_key,
    }
    values.update(overrides)
    return HubConfig(**values)


def connection_string(config: HubConfig, policy: str = "iothubowner") -> str:
    return f"HostName={config.host_name};SharedAccessKeyName={policy};SharedAccessKey={config.policies[policy]}"


def stack_connection_string(state_dir: Path, name: str, host_name: str, policy: str = "iothubowner") -> str:
    """The connection string of a running stack hub (`name` as the stack starts it, e.g. iothub-west-local)."""
    return connection_string(local_hub_config(state_dir, name, int(host_name.rsplit(":", 1)[1])), policy)
