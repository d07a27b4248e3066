"""Independent check of every configured twin: desired sections == template (+) facility '*' (+) facility+type.

Written apart from twin_setup on purpose (its own merge, its own reads), so a bug in the product's merge shows
up as a configuration error here instead of being repeated. Merge semantics are the documented ones: objects
merge recursively, scalars and arrays replace, null deletes the key.
"""

from __future__ import annotations

import copy
import json
from typing import Any

SECTIONS = ("telemetry", "alerts", "firmware", "diagnostics")


def merge(base: Any, patch: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def expected_sections(template: dict, overrides: dict[str, dict], template_name: str) -> dict:
    """overrides: sensor_type ('*' or a template name) -> override document of the facility."""
    document = merge(merge(template, overrides.get("*", {})), overrides.get(template_name, {}))
    return {k: v for k, v in document.items() if k in SECTIONS}


class ExpectedConfigurations:
    """Reads templates (Blob) and overrides (SQL) once, then answers the expected sections for any device."""

    def __init__(self, blob_service, database, container: str = "sensor-configurations"):
        self._templates = {}
        for blob in blob_service.get_container_client(container).list_blobs():
            if blob.name.endswith("-sensor.json"):
                data = blob_service.get_blob_client(container, blob.name).download_blob().readall()
                self._templates[blob.name.removesuffix("-sensor.json")] = json.loads(data)
        self._overrides: dict[str, dict[str, dict]] = {}
        for row in database.fetch_all("SELECT facility_code, sensor_type, overrides FROM facility_overrides"):
            self._overrides.setdefault(row["facility_code"], {})[row["sensor_type"]] = json.loads(row["overrides"])

    def for_device(self, facility: str, template_name: str) -> dict:
        return expected_sections(self._templates[template_name], self._overrides.get(facility, {}), template_name)


def configuration_errors(applied: dict, expected: dict) -> list[str]:
    """Human-readable differences between what a device applied and what it should have."""
    errors = []
    for section in SECTIONS:
        got, want = applied.get(section), expected.get(section)
        if got != want:
            errors.append(f"{section}: got {json.dumps(got, sort_keys=True)}, "
                          f"expected {json.dumps(want, sort_keys=True)}")
    return errors
