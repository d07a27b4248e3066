"""The twin tag schema: what each feature writes into a sensor's twin tags and who reads it, side by side.
Pure. Features name tags through these constants and builders, never through their own string literals.

- sensorType, sensorTypeCode, facility, region, serial: written by allocation (initialTwin); read by twin setup
  (which sensor, which template) and the lifecycle (the facility of a digest);
- certificate {issuer, serialNumber, notBefore, notAfter}: allocation, the certificate presented; read by
  operators and the workbook;
- onboarding {allocatedAt, policyVersion, crossRegion}: allocation; twin setup reads allocatedAt (one of ours?);
- onboarding {status, reason, detail, failedAt, configurationHash, configuredAt, templateVersion, template,
  storage, edgeDeploymentHash, edgeDeployedAt}: twin setup (twin_setup/plan.py); read by twin setup
  (idempotence) and the workbook;
- certificateRenewal {state, level, serialNumber, requestId, ...}: the lifecycle's scan and renewal steps
  (cert_lifecycle/expiry.py TAG_FIELDS); read by them.
- onboarding {stage, stages {allocated, created, configured, acknowledged, live}, stuck {stage, since}}: the
  onboarding funnel (funnel/stages.py; README "Onboarding funnel"): the furthest stage reached, when each was reached,
  and the stage a sensor has stayed in past its limit (null once it progresses); read by the funnel (the next
  reconciliation's query selects sensors whose stage is not live), operators and the workbook. Twin setup's own
  `status` is left alone, so its idempotence check (status configured with the same hash) still holds.

Tag values come back from the hub and anyone with registry write access can change them: a reader validates
them (identity_from_tags goes through the strict CN parser) before they reach SQL, a Blob name or a log line.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from shared.errors import OnboardingError
from shared.identity import SENSOR_TYPES, DeviceIdentity, format_device_id, parse_device_id
from shared.times import iso_utc

SENSOR_TYPE = "sensorType"
SENSOR_TYPE_CODE = "sensorTypeCode"
FACILITY = "facility"
REGION = "region"
SERIAL = "serial"
CERTIFICATE = "certificate"
ONBOARDING = "onboarding"
ALLOCATED_AT = "allocatedAt"
CERTIFICATE_RENEWAL = "certificateRenewal"
# The onboarding funnel's keys inside tags.onboarding (funnel/stages.py writes them).
FUNNEL_STAGE = "stage"
FUNNEL_STAGES = "stages"
FUNNEL_STUCK = "stuck"
STAGES = ("allocated", "created", "configured", "acknowledged", "live")


def allocation_tags(identity: DeviceIdentity, region: str, issuer: str, serial_hex: str, not_before: dt.datetime,
                    not_after: dt.datetime, allocated_at: dt.datetime, policy_version: str,
                    cross_region: bool) -> dict[str, Any]:
    """initialTwin.tags of an allocation: who the sensor is, which certificate it presented, when and how it was
    placed."""
    return {
        SENSOR_TYPE: identity.template,
        SENSOR_TYPE_CODE: identity.type_code,
        FACILITY: identity.facility,
        REGION: region,
        SERIAL: identity.serial,
        CERTIFICATE: {"issuer": issuer, "serialNumber": serial_hex, "notBefore": iso_utc(not_before),
                      "notAfter": iso_utc(not_after)},
        ONBOARDING: {ALLOCATED_AT: iso_utc(allocated_at), "policyVersion": policy_version,
                     "crossRegion": cross_region},
    }


def section(tags: dict[str, Any], name: str) -> dict[str, Any]:
    """An object-valued tag (onboarding, certificateRenewal...), or {} when absent or not an object."""
    value = tags.get(name)
    return value if isinstance(value, dict) else {}


def identity_from_tags(tags: dict[str, Any], sensor_types: dict[str, str] = SENSOR_TYPES) -> DeviceIdentity | None:
    """The sensor the allocation tags name, validated by the CN parser; None when the tags name none.
    Raises OnboardingError when they name one that cannot be (bad values, sensorType contradicting the code)."""
    code, facility, serial = tags.get(SENSOR_TYPE_CODE), tags.get(FACILITY), tags.get(SERIAL)
    if not all(isinstance(v, str) and v for v in (code, facility, serial)):
        return None
    identity = parse_device_id(format_device_id(code, facility, serial), sensor_types)
    if tags.get(SENSOR_TYPE) not in (None, identity.template):
        raise OnboardingError("invalid_registration_id",
                              f"tags say sensorType {str(tags.get(SENSOR_TYPE))[:40]!r} but type code {code}")
    return identity


def allocated_by_us(tags: dict[str, Any]) -> bool:
    """True when the allocation webhook stamped these tags."""
    return ALLOCATED_AT in section(tags, ONBOARDING)


def facility_tag(tags: dict[str, Any]) -> str | None:
    value = tags.get(FACILITY)
    return value if isinstance(value, str) and value else None


def funnel_tags(stage: str, stages: dict[str, str], stuck: dict[str, str] | None) -> dict[str, Any]:
    """The funnel's part of tags.onboarding, as a merge patch (stuck None deletes the key)."""
    if stage not in STAGES or any(name not in STAGES for name in stages):
        raise ValueError(f"unknown onboarding stage in {stage!r} / {sorted(stages)}")
    return {FUNNEL_STAGE: stage, FUNNEL_STAGES: dict(stages), FUNNEL_STUCK: dict(stuck) if stuck else None}
