"""What to write to a twin, given the twin as the registry has it now and the device's configuration. Pure.

Twin layout written by twin setup:
- desired properties: the configuration sections (telemetry, alerts, firmware, diagnostics) and
  `onboarding` = {state: configured, configurationHash, templateVersion[, configurationUrl, configurationBytes,
  configurationUrlExpiresAt]}; when the sections do not fit the budget, only the essential sections stay and
  `configurationUrl` points at the full document in Blob, with a read-only SAS until configurationUrlExpiresAt
  (twin_setup/offload.py; the device downloads it and checks it against configurationHash);
- tags: `onboarding` gains status, configurationHash, configuredAt, templateVersion, template, storage and, for
  gateways, edgeDeploymentHash / edgeDeployedAt (the keys the allocation webhook put there are kept).
Desired keys twin setup does not manage (for example a certificate written by the renewal service) are left
alone; keys it managed before and no longer wants are deleted with null in the same PATCH.
On a permanent failure the tags say status failed, reason <code>, and desired onboarding says the same, so
the waiting sensor learns it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.errors import OnboardingError
from shared.iothub import Twin
from shared.tags import ONBOARDING, section
from twin_setup.configuration import CONFIG_SECTIONS, Configuration
from twin_setup.document import canonical, size_of
from twin_setup.settings import TwinLimits

MANAGED_DESIRED_KEYS = frozenset((*CONFIG_SECTIONS, ONBOARDING))
CONFIGURED, FAILED = "configured", "failed"


@dataclass(frozen=True)
class TwinView:
    """Twin setup's view of a twin: the parts it reads."""

    device_id: str
    etag: str | None
    tags: dict[str, Any]
    desired: dict[str, Any]  # without $metadata / $version
    is_edge: bool

    @classmethod
    def of(cls, twin: Twin) -> TwinView:
        return cls(twin.device_id, twin.etag, twin.tags, twin.desired, twin.is_edge)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TwinView:
        """From GET /twins/{id} JSON."""
        return cls.of(Twin.from_json("", doc))

    @property
    def onboarding(self) -> dict[str, Any]:
        return section(self.tags, ONBOARDING)


@dataclass(frozen=True)
class Plan:
    action: str  # "unchanged" or "write"
    storage: str = "twin"  # where the full configuration lives: "twin" or "blob"
    patch: dict[str, Any] | None = None  # the PATCH body: {"tags": ..., "properties": {"desired": ...}}
    desired_bytes: int = 0  # size of twin setup's part of desired properties, as IoT Hub counts it
    blob: bytes | None = None  # the full document, when storage == "blob"
    apply_edge: bool = False


def replacement_patch(current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that turns `current` into exactly `new` (keys only in current become null)."""
    patch: dict[str, Any] = dict.fromkeys((k for k in current if k not in new), None)
    for key, value in new.items():
        below = current.get(key)
        patch[key] = replacement_patch(below, value) if isinstance(value, dict) and isinstance(below, dict) \
            else value
    return patch


def is_configured(twin: TwinView, config_hash: str) -> bool:
    onboarding = twin.onboarding
    return onboarding.get("status") == CONFIGURED and onboarding.get("configurationHash") == config_hash


def onboarding_desired(config: Configuration, url: str | None = None, size: int | None = None,
                       url_expires_at: str | None = None) -> dict[str, Any]:
    """url: the blob's link, with its read-only SAS when url_expires_at is given (twin_setup/offload.py)."""
    desired = {"state": CONFIGURED, "configurationHash": config.hash, "templateVersion": config.template_version}
    if url is not None:
        desired["configurationUrl"] = url
        desired["configurationBytes"] = size
        if url_expires_at is not None:
            desired["configurationUrlExpiresAt"] = url_expires_at
    return desired


def desired_document(config: Configuration, twin: TwinView, limits: TwinLimits, essential: tuple[str, ...],
                     configuration_url: str, url_expires_at: str | None = None
                     ) -> tuple[str, dict[str, Any], bytes | None]:
    """(storage, twin setup's desired document, blob bytes or None); configuration_too_large if nothing fits."""
    others = size_of({k: v for k, v in twin.desired.items() if k not in MANAGED_DESIRED_KEYS})
    full = {**config.desired, ONBOARDING: onboarding_desired(config)}

    def fits(document: dict[str, Any]) -> bool:
        size = size_of(document)
        return size <= limits.budget_bytes and size + others <= limits.desired_bytes

    if fits(full):
        return "twin", full, None
    blob = canonical(config.document)
    pointer = {ONBOARDING: onboarding_desired(config, configuration_url, len(blob), url_expires_at)}
    with_essentials = {**{k: config.desired[k] for k in essential if k in config.desired}, **pointer}
    for candidate in (with_essentials, pointer):
        if fits(candidate):
            return "blob", candidate, blob
    raise OnboardingError("configuration_too_large",
                          f"even the pointer does not fit: {size_of(pointer)} bytes, {others} bytes of other "
                          f"desired properties, limit {limits.desired_bytes}")


def plan_configuration(twin: TwinView, config: Configuration, limits: TwinLimits, essential: tuple[str, ...],
                       configuration_url: str, now: str, created_at: str | None = None, force: bool = False,
                       url_expires_at: str | None = None) -> Plan:
    """The one PATCH that configures the twin, or "unchanged" when it already carries this configuration (unless
    force: the drift check found its desired properties edited by hand). created_at (the DeviceCreated event's
    time) is recorded once, as the funnel's created stage (funnel/stages.py)."""
    if not force and is_configured(twin, config.hash):
        return Plan("unchanged")
    if config.edge is not None and not twin.is_edge:
        raise OnboardingError("edge_capability_mismatch",
                              f"template {config.template_name} deploys edge modules; the registry says "
                              f"{twin.device_id} is not an IoT Edge device")
    storage, document, blob = desired_document(config, twin, limits, essential, configuration_url, url_expires_at)
    managed_now = {k: v for k, v in twin.desired.items() if k in MANAGED_DESIRED_KEYS}
    tags = {
        "status": CONFIGURED, "reason": None, "detail": None, "failedAt": None,
        "configurationHash": config.hash, "configuredAt": now, "templateVersion": config.template_version,
        "template": config.template_name, "storage": storage,
        "edgeDeploymentHash": config.edge_hash, "edgeDeployedAt": now if config.edge is not None else None,
    }
    if created_at and not twin.onboarding.get("createdAt"):
        tags["createdAt"] = created_at
    patch = {"tags": {ONBOARDING: tags}, "properties": {"desired": replacement_patch(managed_now, document)}}
    return Plan("write", storage, patch, size_of(document), blob, apply_edge=config.edge is not None)


def plan_failure(twin: TwinView, code: str, detail: str | None, now: str) -> dict[str, Any] | None:
    """The PATCH that records a permanent failure, or None when there is nothing to record: the same failure
    is already recorded, or the twin carries a working configuration that a failure must not discredit."""
    onboarding = twin.onboarding
    if onboarding.get("status") == CONFIGURED:
        return None
    if onboarding.get("status") == FAILED and onboarding.get("reason") == code:
        return None
    tags = {"status": FAILED, "reason": code, "failedAt": now, "detail": (detail or "")[:200] or None}
    desired_now = twin.desired.get(ONBOARDING) if isinstance(twin.desired.get(ONBOARDING), dict) else {}
    desired = replacement_patch(desired_now, {"state": FAILED, "reason": code})
    return {"tags": {ONBOARDING: tags}, "properties": {"desired": {ONBOARDING: desired}}}
