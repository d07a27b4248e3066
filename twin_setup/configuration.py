"""Templates, overrides and the merged configuration of one device. Pure: plain data in, plain data out.

A template (`sensor-configurations/{template}-sensor.json`) is a JSON object with
- `templateVersion` (string, required) and `sensorType` (string, optional; must name the template's own type),
- the configuration sections `telemetry`, `alerts`, `firmware`, `diagnostics` (objects, required), which become
  the device's desired properties and so must obey IoT Hub's twin rules (see document.py),
- `edge` (object, optional): `{"modulesContent": {"$edgeAgent": {"properties.desired": {...}}, "$edgeHub": ...}}`,
  an IoT Edge deployment manifest. Its keys (`$edgeAgent`, `properties.desired`) are not valid twin property
  names: it is applied with applyConfigurationContent, never written into desired properties, and each
  module's `properties.desired` is checked as the module twin it becomes.
Anything else at the top level is refused, so a misspelt section fails at validation instead of silently
never reaching a device.

A facility override (a facility_overrides row) is a JSON object over the same sections (not the metadata),
applied as a merge patch (merge.py); null deletes. The merged document is validated again, so an override
cannot introduce what a template may not contain.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shared.errors import OnboardingError
from shared.identity import DeviceIdentity
from twin_setup.document import DocumentError, check_twin_section, content_hash, size_of
from twin_setup.merge import Layer, Merged, merge_all, merge_layers
from twin_setup.settings import TwinLimits

META_KEYS = ("templateVersion", "sensorType")
CONFIG_SECTIONS = ("telemetry", "alerts", "firmware", "diagnostics")
EDGE_KEY = "edge"
KNOWN_KEYS = frozenset((*META_KEYS, *CONFIG_SECTIONS, EDGE_KEY))
OVERRIDABLE_KEYS = frozenset((*CONFIG_SECTIONS, EDGE_KEY))
REQUIRED_EDGE_MODULES = ("$edgeAgent", "$edgeHub")
MODULE_DESIRED = "properties.desired"
# IoT Hub module IDs: up to 128 ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '
_MODULE_ID = re.compile(r"[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}", re.ASCII)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-+_]{0,63}", re.ASCII)


@dataclass(frozen=True)
class Template:
    name: str  # temperature, pressure, ..., gateway
    document: dict[str, Any]
    version: str
    etag: str | None = None

    @property
    def blob_name(self) -> str:
        return template_blob_name(self.name)


@dataclass(frozen=True)
class Override:
    facility: str
    sensor_type: str  # a template name or "*"
    document: dict[str, Any] | None  # None when the row is not valid JSON object text
    problem: str | None = None
    updated_at: str | None = None

    @property
    def layer_name(self) -> str:
        return f"override {self.facility}/{self.sensor_type}"


@dataclass(frozen=True)
class Configuration:
    identity: DeviceIdentity
    template_name: str
    template_version: str
    document: dict[str, Any]  # everything: metadata, sections, edge (what goes to Blob when oversized)
    desired: dict[str, Any]  # the sections that become desired properties
    edge: dict[str, Any] | None  # the modulesContent of an edge deployment
    hash: str  # SHA-256 of the canonical document
    layers: tuple[str, ...]

    @property
    def edge_hash(self) -> str | None:
        return content_hash(self.edge) if self.edge is not None else None


def template_blob_name(template: str) -> str:
    return f"{template}-sensor.json"


def _edge_problem(edge: Any, limits: TwinLimits) -> str | None:
    if not isinstance(edge, dict) or set(edge) != {"modulesContent"} or not isinstance(edge["modulesContent"], dict):
        return "edge must be {\"modulesContent\": {...}}"
    modules = edge["modulesContent"]
    missing = [m for m in REQUIRED_EDGE_MODULES if m not in modules]
    if missing:
        return f"edge.modulesContent lacks {', '.join(missing)}"
    for module_id, content in modules.items():
        if not _MODULE_ID.fullmatch(module_id):
            return f"edge.modulesContent: {module_id[:40]!r} is not a valid module ID"
        if not isinstance(content, dict) or set(content) != {MODULE_DESIRED} or \
                not isinstance(content[MODULE_DESIRED], dict):
            return f"edge.modulesContent.{module_id} must be {{\"{MODULE_DESIRED}\": {{...}}}}"
        desired = content[MODULE_DESIRED]
        try:
            check_twin_section(desired, limits, f"edge.modulesContent.{module_id}.{MODULE_DESIRED}")
        except DocumentError as exc:
            return str(exc)
        if size_of(desired) > limits.desired_bytes:
            return f"edge.modulesContent.{module_id}: module twin larger than {limits.desired_bytes} bytes"
    return None


def document_problem(document: Any, limits: TwinLimits, template_name: str | None = None) -> str | None:
    """Why `document` (a template, or a template merged with overrides) is not a valid configuration."""
    if not isinstance(document, dict):
        return "not a JSON object"
    unknown = sorted(set(document) - KNOWN_KEYS)
    if unknown:
        return f"unknown top-level section(s) {', '.join(repr(k[:40]) for k in unknown[:5])}"
    version = document.get("templateVersion")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        return "templateVersion must be a short version string"
    sensor_type = document.get("sensorType")
    if sensor_type is not None and (not isinstance(sensor_type, str) or
                                    (template_name is not None and sensor_type != template_name)):
        return f"sensorType {str(sensor_type)[:40]!r} does not match template {template_name!r}"
    for section in CONFIG_SECTIONS:
        if not isinstance(document.get(section), dict):
            return f"section {section!r} is missing or not an object"
    try:
        check_twin_section({k: document[k] for k in CONFIG_SECTIONS}, limits)
    except DocumentError as exc:
        return str(exc)
    if EDGE_KEY in document:
        return _edge_problem(document[EDGE_KEY], limits)
    return None


def parse_template(name: str, raw: bytes, limits: TwinLimits, etag: str | None = None) -> Template:
    """A validated template from the blob's bytes; OnboardingError invalid_template otherwise."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise OnboardingError("invalid_template", f"{template_blob_name(name)}: not JSON ({exc})"[:300]) from None
    problem = document_problem(document, limits, name)
    if problem:
        raise OnboardingError("invalid_template", f"{template_blob_name(name)}: {problem}"[:300])
    return Template(name, document, document["templateVersion"], etag)


def parse_override(facility: str, sensor_type: str, text: Any, updated_at: Any = None) -> Override:
    """An override row; a row that is not a JSON object over overridable sections carries its problem."""
    stamp = str(updated_at) if updated_at is not None else None
    try:
        document = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return Override(facility, sensor_type, None, "not a JSON object", stamp)
    unknown = sorted(set(document) - OVERRIDABLE_KEYS)
    if unknown:
        return Override(facility, sensor_type, None,
                        f"cannot override {', '.join(repr(k[:40]) for k in unknown[:5])}", stamp)
    return Override(facility, sensor_type, document, None, stamp)


def applicable(overrides: list[Override], template: str) -> list[Override]:
    """The facility's overrides that apply to a template, in merge order: `*` first, then the template's own."""
    everyone = [o for o in overrides if o.sensor_type == "*"]
    own = [o for o in overrides if o.sensor_type == template]
    return everyone + own


def _layers(template: Template, overrides: list[Override]) -> list[Layer]:
    layers = [Layer(f"template {template.name}", template.document)]
    for override in overrides:
        if override.document is None:
            raise OnboardingError("invalid_override", f"{override.facility}/{override.sensor_type}: "
                                                      f"{override.problem}")
        layers.append(Layer(override.layer_name, override.document))
    return layers


def build_configuration(identity: DeviceIdentity, template: Template, overrides: list[Override],
                        limits: TwinLimits) -> Configuration:
    """Template merged with the overrides that apply (given in merge order), validated and hashed."""
    layers = _layers(template, overrides)
    document = merge_all(template.document, [layer.document for layer in layers[1:]])
    return _finish(identity, template, document, layers, limits)


def explain_configuration(identity: DeviceIdentity, template: Template, overrides: list[Override],
                          limits: TwinLimits) -> tuple[Configuration, Merged]:
    """build_configuration plus where each value came from (the preview CLI)."""
    layers = _layers(template, overrides)
    merged = merge_layers(layers)
    return _finish(identity, template, merged.document, layers, limits), merged


def _finish(identity: DeviceIdentity, template: Template, document: dict[str, Any], layers: list[Layer],
            limits: TwinLimits) -> Configuration:
    if len(layers) > 1:
        problem = document_problem(document, limits, template.name)
        if problem:
            names = ", ".join(layer.name.removeprefix("override ") for layer in layers[1:])
            raise OnboardingError("invalid_override", f"with {names}: {problem}"[:300])
    desired = {k: document[k] for k in document if k in CONFIG_SECTIONS}
    edge = document[EDGE_KEY]["modulesContent"] if EDGE_KEY in document else None
    return Configuration(identity, template.name, template.version, document, desired,
                         edge, content_hash(document), tuple(layer.name for layer in layers))
