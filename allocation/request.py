"""The DPS AllocationRequest, parsed exactly as DPS sends it (docs/contracts.md 1). Pure.

Anything that is not the documented shape is refused with invalid_request before any I/O; the registration
ID goes through the shared CN parser as the first gate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from allocation.certificate import CertificateDetails, parse_x509_context
from shared.errors import OnboardingError
from shared.identity import DeviceIdentity, parse_device_id

MAX_BODY_BYTES = 64 * 1024  # DPS requests are a few KB; anything larger is not DPS
MAX_LINKED_HUBS = 64
MAX_PAYLOAD_BYTES = 4 * 1024


@dataclass(frozen=True)
class AllocationRequest:
    registration_id: str
    identity: DeviceIdentity
    enrollment_kind: str  # "group" | "individual"
    enrollment_id: str
    attestation: str  # "x509" | "symmetricKey" | "tpm"
    iot_edge: bool
    linked_hubs: tuple[str, ...]
    current_hub: str | None
    current_device_id: str | None
    device_payload: dict | None
    certificate: CertificateDetails | None
    # The enrollment's reprovisionPolicy.migrateDeviceData (DPS's default: true). On re-provisioning it decides
    # whether the hub keeps the device's twin; the answer leaves initialTwin out then (allocation/response.py).
    migrate_device_data: bool = True

    @property
    def reprovisioning(self) -> bool:
        """DPS names the hub the device is on only when it provisions again (docs/contracts.md 1)."""
        return self.current_hub is not None


def _object(parent: dict, key: str, required: bool = True) -> dict | None:
    value = parent.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise OnboardingError("invalid_request", f"{key} must be an object")
    return value


def _string(parent: dict, key: str, required: bool = True, max_len: int = 256) -> str | None:
    value = parent.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise OnboardingError("invalid_request", f"{key} must be a non-empty string of at most {max_len} characters")
    return value


def _enrollment(body: dict) -> tuple[str, str, dict]:
    group, individual = body.get("enrollmentGroup"), body.get("individualEnrollment")
    if group is not None and individual is not None:
        raise OnboardingError("invalid_request", "both enrollmentGroup and individualEnrollment are present")
    if group is not None:
        record = _object(body, "enrollmentGroup")
        return "group", _string(record, "enrollmentGroupId"), record
    if individual is not None:
        record = _object(body, "individualEnrollment")
        return "individual", _string(record, "registrationId"), record
    raise OnboardingError("invalid_request", "neither enrollmentGroup nor individualEnrollment is present")


def _attestation(context: dict) -> str:
    present = [kind for kind in ("x509", "symmetricKey", "tpm") if context.get(kind) is not None]
    if len(present) != 1:
        raise OnboardingError("invalid_request", "deviceRuntimeContext needs exactly one of x509, symmetricKey, tpm")
    return present[0]


def _linked_hubs(body: dict) -> tuple[str, ...]:
    hubs = body.get("linkedHubs")
    if not isinstance(hubs, list) or not hubs or len(hubs) > MAX_LINKED_HUBS:
        raise OnboardingError("invalid_request", "linkedHubs must be a non-empty array of host names")
    if not all(isinstance(h, str) and 0 < len(h) <= 255 for h in hubs):
        raise OnboardingError("invalid_request", "linkedHubs must hold host names")
    return tuple(hubs)


def _device_payload(context: dict) -> dict | None:
    payload = context.get("payload")
    if payload is None:
        return None
    if not isinstance(payload, dict) or len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise OnboardingError("invalid_request", f"payload must be a JSON object of at most {MAX_PAYLOAD_BYTES} bytes")
    return payload


def _migrates_device_data(record: dict) -> bool:
    """reprovisionPolicy.migrateDeviceData, true unless the enrollment says false (DPS's default policy is
    "re-provision and migrate data": Microsoft Learn, "How to reprovision devices", azure-docs
    articles/iot-dps/how-to-reprovision.md)."""
    policy = record.get("reprovisionPolicy")
    if policy is None:
        return True
    if not isinstance(policy, dict):
        raise OnboardingError("invalid_request", "reprovisionPolicy must be an object")
    value = policy.get("migrateDeviceData", True)
    if not isinstance(value, bool):
        raise OnboardingError("invalid_request", "reprovisionPolicy.migrateDeviceData must be a boolean")
    return value


def parse_allocation_request(raw: bytes) -> AllocationRequest:
    if not raw:
        raise OnboardingError("invalid_request", "empty body")
    if len(raw) > MAX_BODY_BYTES:
        raise OnboardingError("invalid_request", f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise OnboardingError("invalid_request", "body is not JSON") from None
    if not isinstance(body, dict):
        raise OnboardingError("invalid_request", "body must be a JSON object")

    kind, enrollment_id, record = _enrollment(body)
    context = _object(body, "deviceRuntimeContext")
    registration_id = _string(context, "registrationId", max_len=128)
    identity = parse_device_id(registration_id)
    attestation = _attestation(context)
    certificate = parse_x509_context(context["x509"]) if attestation == "x509" else None
    capabilities = record.get("capabilities") or {}
    # The docs' table says currentIoTHubHostName, their example currentIotHubHostName: read both.
    current_key = "currentIotHubHostName" if "currentIotHubHostName" in context else "currentIoTHubHostName"
    return AllocationRequest(
        registration_id=registration_id,
        identity=identity,
        enrollment_kind=kind,
        enrollment_id=enrollment_id,
        attestation=attestation,
        iot_edge=bool(capabilities.get("iotEdge")) if isinstance(capabilities, dict) else False,
        linked_hubs=_linked_hubs(body),
        current_hub=_string(context, current_key, required=False),
        current_device_id=_string(context, "currentDeviceId", required=False, max_len=128),
        device_payload=_device_payload(context),
        certificate=certificate,
        migrate_device_data=_migrates_device_data(record),
    )
