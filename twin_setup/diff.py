"""What a template or override change would do to the installed fleet, before it goes out. Pure.

Each installed sensor (its twin as the registry has it) gets its configuration built twice with twin setup's own
merge and validation (configuration.build_configuration): from the sources in force ("before") and from the
candidate sources ("after"). It would change when the candidate's configuration hash differs from the hash its
twin carries (tags.onboarding.configurationHash: what twin setup last wrote), so a sensor that missed an earlier
change counts too. The fields are the leaf paths that differ between the two documents; where it would live comes
from twin setup's own size rule (plan.desired_document), so "no longer fits the twin" means exactly what the
writer would do: the full document to Blob and a pointer in the twin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.errors import OnboardingError
from shared.identity import DeviceIdentity
from twin_setup.configuration import Configuration, Override, Template, applicable, build_configuration
from twin_setup.identify import identify
from twin_setup.plan import TwinView, desired_document
from twin_setup.settings import TwinLimits

MAX_FIELDS = 50  # per group, in the report


@dataclass(frozen=True)
class Sources:
    """Templates by name and the override rows of each facility (None: the facility is unknown)."""

    templates: dict[str, Template]
    overrides: dict[str, list[Override] | None]

    def configuration(self, identity: DeviceIdentity, limits: TwinLimits) -> Configuration:
        template = self.templates.get(identity.template)
        if template is None:
            raise OnboardingError("unknown_template", f"no template {identity.template!r}")
        rows = self.overrides.get(identity.facility)
        if rows is None:
            raise OnboardingError("unknown_facility", f"facility {identity.facility}")
        return build_configuration(identity, template, applicable(rows, identity.template), limits)


@dataclass
class Group:
    facility: str
    template: str
    sensors: int = 0
    changing: int = 0
    fields: set[str] = field(default_factory=set)
    offloaded: list[str] = field(default_factory=list)  # would move from the twin to Blob
    errors: dict[str, str] = field(default_factory=dict)  # device ID -> "code: detail"

    def as_dict(self) -> dict[str, Any]:
        return {"facility": self.facility, "template": self.template, "sensors": self.sensors,
                "changing": self.changing, "fields": sorted(self.fields)[:MAX_FIELDS],
                "fieldCount": len(self.fields), "offloaded": sorted(self.offloaded),
                "errors": dict(sorted(self.errors.items()))}


@dataclass
class FleetDiff:
    groups: dict[tuple[str, str], Group] = field(default_factory=dict)
    changing_devices: list[tuple[str, str]] = field(default_factory=list)  # (hub, device ID) that would change
    skipped: int = 0  # twins that are not identifiable sensors

    @property
    def changing(self) -> int:
        return sum(g.changing for g in self.groups.values())

    @property
    def errors(self) -> int:
        return sum(len(g.errors) for g in self.groups.values())

    def as_dict(self) -> dict[str, Any]:
        return {"changing": self.changing, "errors": self.errors, "skipped": self.skipped,
                "offloaded": sum(len(g.offloaded) for g in self.groups.values()),
                "groups": [g.as_dict() for _, g in sorted(self.groups.items())]}


def leaf_paths(value: Any, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """{dotted path: leaf value} of a JSON document (arrays and empty objects are leaves)."""
    if isinstance(value, dict) and value:
        found: dict[str, Any] = {}
        for key, child in value.items():
            found.update(leaf_paths(child, (*prefix, key)))
        return found
    return {".".join(prefix): value}


def changed_fields(before: dict[str, Any] | None, after: dict[str, Any]) -> set[str]:
    """Leaf paths whose value differs (added, removed or changed); metadata (templateVersion) included."""
    old = leaf_paths(before) if before else {}
    new = leaf_paths(after) if after else {}
    return {p for p in old.keys() | new.keys() if old.get(p, _MISSING) != new.get(p, _MISSING)}


_MISSING = object()


def diff_fleet(twins: Iterable[tuple[str, TwinView]], before: Sources, after: Sources, limits: TwinLimits,
               essential: tuple[str, ...], url_for: Callable[[str, str], str],
               selected: Callable[[DeviceIdentity], bool] = lambda identity: True) -> FleetDiff:
    """twins: (hub, twin) of installed sensors; selected: which identities the change concerns."""
    result = FleetDiff()
    for hub, twin in twins:
        try:
            identity = identify(twin.tags, twin.device_id).identity
        except OnboardingError:
            result.skipped += 1
            continue
        if not selected(identity):
            continue
        key = (identity.facility, identity.template)
        group = result.groups.setdefault(key, Group(*key))
        group.sensors += 1
        try:
            new = after.configuration(identity, limits)
            storage, _, _ = desired_document(new, twin, limits, essential, url_for(twin.device_id, new.hash))
        except OnboardingError as err:
            group.errors[twin.device_id] = f"{err.code}: {err.detail or err.error.message}"[:300]
            continue
        if twin.onboarding.get("configurationHash") == new.hash and twin.onboarding.get("status") == "configured":
            continue
        group.changing += 1
        result.changing_devices.append((hub, twin.device_id))
        try:
            old = before.configuration(identity, limits).document
        except OnboardingError:
            old = None
        group.fields |= changed_fields(old, new.document)
        if storage == "blob" and twin.onboarding.get("storage") != "blob":
            group.offloaded.append(twin.device_id)
    return result
