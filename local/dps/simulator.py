"""What DPS does for one X.509 registration, end to end:

1. match the enrollment: an individual enrollment for the registration ID first (the ones given to the
   simulator, and those created through the service API emulator, read from its store so that an enrollment
   another process created counts at once), else the group whose CA the device's chain runs through (chain
   validated to a trusted root). A disabled enrollment refuses the device with registration status "disabled",
   without calling the webhook: Microsoft's custom allocation tutorial ("An Individual Enrollment was created to
   disable the device | Result status: Disabled | SDK returns PROV_DEVICE_RESULT_DISABLED"; no error code is
   documented for it) and "Disallow specific devices in an enrollment group" (azure-docs
   articles/iot-dps/how-to-revoke-device-access-portal.md: a disabled individual enrollment blocks the device
   even when an enabled group matches);
2. call the custom allocation webhook with the documented AllocationRequest (docs/contracts.md 1); a non-200
   answer fails the registration with the webhook's status and error code; a hub not in linkedHubs fails it;
3. create the device (X.509 CA authentication, iotEdge from the enrollment) in the returned hub with the
   returned initial twin in one registry call (bulk create, as DPS does), or keep/move an existing device
   per the reprovision policy;
4. return the assignment (hub, device ID, the webhook's payload) like DPS's registration result.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from local.dps.chain import ChainError, validate_chain
from local.dps.enrollments import Enrollment, from_service_entry
from local.dps.linked_hub import LinkedHub, LinkError
from local.dps.store import EnrollmentStore
from local.json_client import HttpError, JsonClient


@dataclass(frozen=True)
class RegistrationResult:
    registration_id: str
    status: str  # assigned | failed | disabled
    assigned_hub: str | None = None
    device_id: str | None = None
    payload: dict | None = None
    error_code: str | None = None  # the webhook's catalogue code, or a DPS-side reason (simulator's label)
    error_message: str | None = None
    webhook_status: int | None = None
    duration_ms: float = 0.0
    enrollment: str | None = None  # which enrollment matched: "group:{id}" or "individual:{registration id}"


def _common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


class DpsSimulator:
    def __init__(self, enrollments: list[Enrollment], linked_hubs: list[str], roots: list[x509.Certificate],
                 hub_connection_strings: Mapping[str, str], function_key: str | None = None,
                 state_file: Path | None = None, webhook_timeout_s: float = 30,
                 enrollment_store: EnrollmentStore | None = None):
        self.groups = [e for e in enrollments if e.is_group]
        # Registration IDs are case-insensitive in DPS (service API, IndividualEnrollment.registrationId).
        self.individual = {e.enrollment_id.lower(): e for e in enrollments if not e.is_group}
        self.service_store = enrollment_store  # the service API emulator's enrollments (local/dps/service.py)
        self.linked_hubs = list(linked_hubs)
        self.roots = roots
        self.hubs = {host: LinkedHub(conn) for host, conn in hub_connection_strings.items()}  # DPS's hub links
        self.function_key = function_key
        self.state_file = state_file
        self.webhook_timeout_s = webhook_timeout_s
        self.assignments: dict[str, tuple[str, str]] = self._load()  # registration id -> (hub, device id)
        self._lock = threading.Lock()
        self._webhook = JsonClient()

    # -- state ------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, tuple[str, str]]:
        if not self.state_file or not self.state_file.exists():
            return {}
        assignments = {}
        for line in self.state_file.read_text().splitlines():
            record = json.loads(line)
            assignments[record["registrationId"]] = (record["hub"], record["deviceId"])
        return assignments

    def _remember(self, registration_id: str, hub: str, device_id: str) -> None:
        with self._lock:
            self.assignments[registration_id] = (hub, device_id)
            if self.state_file:
                self.state_file.parent.mkdir(parents=True, exist_ok=True)
                with self.state_file.open("a") as out:
                    out.write(json.dumps({"registrationId": registration_id, "hub": hub, "deviceId": device_id})
                              + "\n")

    # -- steps ------------------------------------------------------------------------------------------
    def individual_enrollment(self, registration_id: str) -> Enrollment | None:
        """The individual enrollment for a registration ID: the service API's record (what the function app or an
        operator last wrote) before one handed to the simulator."""
        if self.service_store is not None:
            entry = self.service_store.get(registration_id)
            if entry is not None:
                return from_service_entry(entry, self.linked_hubs)
        return self.individual.get(registration_id.lower())

    def match_enrollment(self, registration_id: str, leaf: x509.Certificate,
                         intermediates: list[x509.Certificate], now: dt.datetime) -> Enrollment:
        individual = self.individual_enrollment(registration_id)
        if individual is not None:
            if leaf not in individual.individual_certificates:
                raise ChainError("certificate does not match the individual enrollment")
            if individual.provisioning_status != "enabled":
                return individual  # refused as disabled by register(), whatever the chain
            validate_chain(leaf, intermediates, self.roots, None, now)
            return individual
        # Only a group whose CA is in the presented chain can match (DPS finds the group by that CA): validating
        # the chain once per candidate, not once per group, halves the simulator's signature checks.
        issuers = {leaf.issuer, *(c.subject for c in intermediates)}
        for group in self.groups:
            if group.ca_certificate.subject not in issuers:
                continue
            try:
                validate_chain(leaf, intermediates, self.roots, group.ca_certificate, now)
            except ChainError:
                continue
            return group
        raise ChainError("no enrollment matches the device certificate")

    def allocation_request(self, enrollment: Enrollment, registration_id: str, leaf: x509.Certificate,
                           payload: dict | None) -> dict:
        context: dict = {"registrationId": registration_id, "x509": {
            "clientCertificate": base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()}}
        previous = self.assignments.get(registration_id)
        if previous:
            context["currentIotHubHostName"], context["currentDeviceId"] = previous
        if payload is not None:
            context["payload"] = payload
        key = "enrollmentGroup" if enrollment.is_group else "individualEnrollment"
        return {key: enrollment.record(), "deviceRuntimeContext": context,
                "linkedHubs": [h for h in self.linked_hubs if h in enrollment.iot_hubs]}

    def _call_webhook(self, enrollment: Enrollment, body: dict) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if self.function_key:
            headers["x-functions-key"] = self.function_key
        response = self._webhook.request("POST", enrollment.webhook_url, body=body, headers=headers,
                                         timeout_s=self.webhook_timeout_s)
        try:
            answer = response.json() or {}
        except ValueError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}

    def _create_device(self, hub: str, device_id: str, enrollment: Enrollment, initial_twin: dict) -> None:
        twin = initial_twin or enrollment.initial_twin or {}
        self.hubs[hub].create_device(device_id, iot_edge=enrollment.iot_edge, tags=twin.get("tags"),
                                     desired=(twin.get("properties") or {}).get("desired"))

    def register(self, leaf: x509.Certificate, intermediates: list[x509.Certificate] = (),
                 payload: dict | None = None, now: dt.datetime | None = None) -> RegistrationResult:
        started = time.perf_counter()
        registration_id = _common_name(leaf) or ""
        matched: str | None = None

        def result(status: str, **fields) -> RegistrationResult:
            return RegistrationResult(registration_id, status, duration_ms=(time.perf_counter() - started) * 1000,
                                      enrollment=matched, **fields)

        try:
            enrollment = self.match_enrollment(registration_id, leaf, list(intermediates),
                                               now or dt.datetime.now(dt.UTC))
        except ChainError as exc:
            return result("failed", error_code="unauthorized", error_message=str(exc))
        kind = "group" if enrollment.is_group else "individual"
        matched = f"{kind}:{enrollment.enrollment_id}"
        if enrollment.provisioning_status != "enabled":
            return result("disabled", error_code="enrollment_disabled",
                          error_message=f"{kind} enrollment {enrollment.enrollment_id} is disabled")
        if enrollment.allocation_policy != "custom" or not enrollment.webhook_url:
            return result("failed", error_code="allocation_not_simulated",
                          error_message=f"allocation policy {enrollment.allocation_policy!r}: the simulator "
                                        "allocates through a custom allocation webhook only")

        body = self.allocation_request(enrollment, registration_id, leaf, payload)
        try:
            status, answer = self._call_webhook(enrollment, body)
        except HttpError as exc:  # no answer at all: DPS fails the registration as for any non-200
            return result("failed", error_code="webhook_unreachable", error_message=str(exc))
        if status != 200:
            code = (answer.get("error") or {}).get("code") if isinstance(answer.get("error"), dict) else None
            return result("failed", webhook_status=status, error_code=code or f"http_{status}",
                          error_message=f"Custom allocation failed with status code: {status}")
        hub = answer.get("iotHubHostName")
        if hub not in body["linkedHubs"]:
            return result("failed", webhook_status=status, error_code="hub_not_linked",
                          error_message=f"webhook answered hub {hub!r}, not one of linkedHubs")

        previous = self.assignments.get(registration_id)
        device_id = registration_id
        if previous and previous[0] == hub:
            pass  # re-provisioning to the same hub: the device stays as it is
        elif previous and not enrollment.reprovision.update_hub_assignment:
            hub = previous[0]  # the policy keeps the device where it is
        else:
            try:
                self._create_device(hub, device_id, enrollment, answer.get("initialTwin") or {})
            except (LinkError, HttpError) as exc:
                return result("failed", webhook_status=status, error_code="device_creation_failed",
                              error_message=str(exc))
        self._remember(registration_id, hub, device_id)
        return result("assigned", assigned_hub=hub, device_id=device_id, payload=answer.get("payload"),
                      webhook_status=status)
