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
2. call the custom allocation webhook with the documented AllocationRequest (docs/contracts.md 1) and treat its
   answer as DPS does (Microsoft's custom allocation tutorial, azure-docs
   articles/iot-dps/tutorial-custom-allocation-policies.md, "Troubleshooting custom allocation policies"):
   "The webhook returns error code >= 429 | DPS' orchestration will retry a number of times. The retry policy is
   currently: Retry count: 10, Initial interval: 1s, Increment: 9s" (so waits of 1, 10, 19, ... 82 s; scaled by
   retry_scale, e.g. 0.001 in tests); "The webhook returns 401 Unauthorized | Result status: Failed, Error code:
   CustomAllocationUnauthorizedAccess (400209)"; "returns 200 OK with 'iotHubHostName' in the response, but set to
   an empty string or null | ... CustomAllocationIotHubNotSpecified (400208)"; "The webhook returns any other
   status code | Result status: Failed, Error code: CustomAllocationFailed (400207)". The outcome after the last
   retry is not documented (UNCONFIRMED, docs/contracts.md 1.3): the simulator fails it with 400207. A hub the
   answer names that is not one of linkedHubs is also 400208 here (team reading: DPS cannot assign it). The
   device sees only DPS's code (error_code, error_message); the webhook's own code stays in `webhook_code` and
   the simulator's log, as an operator finds it in the audit table (provisioning_events.reason_code);
   Enrollment groups may hold a primary and a secondary signing CA (service API X509Attestation
   signingCertificates); a device under either matches, as "How to roll X.509 device certificates" (azure-docs
   articles/iot-dps/how-to-roll-certificates.md, "Enrollment groups and certificate expiration") needs;
3. first registration: create the device in the returned hub with the returned initial twin (else the
   enrollment's) in one registry call (bulk create, as DPS does), as a self-signed X.509 identity holding the
   SHA-1 thumbprint of the device's leaf (local/dps/linked_hub.py: "creating a device identity in an IoT hub using
   the device's leaf certificate as the credential", same article; DPS-created X.509 devices show as self-signed,
   MicrosoftDocs/azure-docs issues 70976 and 108289);
   re-provisioning (DPS holds an assignment for the registration ID; the webhook gets currentIotHubHostName and
   currentDeviceId): the hub's identity gets the new leaf's thumbprint ("Once a new leaf certificate has been
   rolled to the device ... The result of the device's connection attempt will be an 'unauthorized' connection
   error ... the provisioning service can update the IoT Hub device registry information as needed when the
   device is reprovisioned", same article), and the twin is kept, reset or moved per the enrollment's
   reprovisionPolicy (service API ReprovisionPolicy: updateHubAssignment "If set to false, the device will stay
   assigned to its current IoT hub"; migrateDeviceData "If set to false, the Device Provisioning Service will
   reset the device's data to the initial desired configuration"; "Device reprovisioning concepts", azure-docs
   articles/iot-dps/concepts-device-reprovision.md: on a hub change "the device registration with the initial IoT
   hub will be removed"); an initialTwin in the webhook's answer "will override any twin migration settings in
   the enrollment" (concepts-custom-allocation.md). Details and the UNCONFIRMED readings: DpsSimulator._assign;
4. return the assignment (hub, device ID, the webhook's payload) like DPS's registration result, with what DPS
   did in the hub: substatus (DeviceRegistrationState.substatus: initialAssignment, deviceDataMigrated,
   deviceDataReset, reprovisionedToInitialAssignment), reprovisioned, identity_updated / identity_created,
   twin_reset, previous_hub and the thumbprint now registered.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from local.dps.chain import ChainError, validate_chain
from local.dps.enrollments import Enrollment, from_service_entry, from_service_group_entry
from local.dps.linked_hub import LinkedHub, LinkError, thumbprint
from local.dps.store import GROUPS, EnrollmentStore
from local.json_client import HttpError, JsonClient

log = logging.getLogger(__name__)

# DPS's retry of a webhook answer >= 429 (the tutorial's table, quoted above): 10 retries, 1 s then 9 s more each.
DPS_RETRY_COUNT = 10
DPS_RETRY_INITIAL_S = 1.0
DPS_RETRY_INCREMENT_S = 9.0
# DPS's error codes for a device whose custom allocation failed (the same table)
CUSTOM_ALLOCATION_FAILED = "CustomAllocationFailed"  # 400207
HUB_NOT_SPECIFIED = "CustomAllocationIotHubNotSpecified"  # 400208
UNAUTHORIZED_ACCESS = "CustomAllocationUnauthorizedAccess"  # 400209
DPS_ERROR_NUMBERS = {CUSTOM_ALLOCATION_FAILED: 400207, HUB_NOT_SPECIFIED: 400208, UNAUTHORIZED_ACCESS: 400209}


def dps_retry_delays(scale: float = 1.0) -> list[float]:
    """The waits before each of DPS's retries of a >= 429 answer, in seconds, times scale."""
    return [(DPS_RETRY_INITIAL_S + DPS_RETRY_INCREMENT_S * i) * scale for i in range(DPS_RETRY_COUNT)]


@dataclass(frozen=True)
class RegistrationResult:
    registration_id: str
    status: str  # assigned | failed | disabled
    assigned_hub: str | None = None
    device_id: str | None = None
    payload: dict | None = None
    # What the device sees: DPS's code after a webhook answer (CustomAllocationFailed, ...; error_number 4002xx),
    # or a DPS-side reason before or after the webhook (the simulator's label: unauthorized, enrollment_disabled...)
    error_code: str | None = None
    error_message: str | None = None
    webhook_status: int | None = None  # the webhook's last answer (not shown to a device; the simulator's log)
    duration_ms: float = 0.0
    enrollment: str | None = None  # which enrollment matched: "group:{id}" or "individual:{registration id}"
    webhook_code: str | None = None  # the webhook's own catalogue code (its body): operator's view, never the device's
    webhook_calls: int = 0  # 1 + DPS's retries
    # What DPS did in the hub (service API DeviceRegistrationState.substatus): initialAssignment,
    # deviceDataMigrated, deviceDataReset (a hub change) or reprovisionedToInitialAssignment (same hub again)
    substatus: str | None = None
    reprovisioned: bool = False  # a registration after the first (DPS had an assignment for this registration ID)
    identity_updated: bool = False  # an existing hub identity was given this certificate's thumbprint in place
    identity_created: bool = False  # the identity was created in assigned_hub (first time, moved, or re-created)
    twin_reset: bool = False  # the twin was set to the initial twin rather than kept or migrated
    previous_hub: str | None = None  # the hub the device was assigned to before (re-provisioning only)
    thumbprint: str | None = None  # the SHA-1 thumbprint of the leaf now in the hub's registry

    @property
    def error_number(self) -> int | None:
        return DPS_ERROR_NUMBERS.get(self.error_code or "")


def _common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


class DpsSimulator:
    def __init__(self, enrollments: list[Enrollment], linked_hubs: list[str], roots: list[x509.Certificate],
                 hub_connection_strings: Mapping[str, str], function_key: str | None = None,
                 state_file: Path | None = None, webhook_timeout_s: float = 30,
                 enrollment_store: EnrollmentStore | None = None, retry_scale: float = 1.0,
                 webhook_twin_overrides_migration: bool = True):
        """retry_scale multiplies DPS's retry waits (1, 10, 19 ... s): 1 is DPS's own schedule, 0.001 keeps
        tests fast (DPS_RETRY_SCALE for the stack's simulator). webhook_twin_overrides_migration: an initialTwin
        in the webhook's answer to a re-provisioning replaces the device's twin whatever the reprovision policy
        (Microsoft's "If an initial twin is returned, it will override any twin migration settings in the
        enrollment"); False keeps the policy's choice (a switch while that reading is unconfirmed)."""
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
        self.retry_scale = retry_scale
        self.webhook_twin_overrides_migration = webhook_twin_overrides_migration
        self._sleep = time.sleep
        self.initial_twins: dict[str, dict] = {}  # registration id -> the initial twin of its first assignment
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
            if "initialTwin" in record:
                self.initial_twins[record["registrationId"]] = record["initialTwin"]
        return assignments

    def _remember(self, registration_id: str, hub: str, device_id: str, initial_twin: dict | None = None) -> None:
        """Record the assignment; initial_twin (first assignment only) is the device state DPS keeps as the
        device's initial configuration ("Device reprovisioning concepts")."""
        with self._lock:
            self.assignments[registration_id] = (hub, device_id)
            record = {"registrationId": registration_id, "hub": hub, "deviceId": device_id}
            if initial_twin is not None:
                self.initial_twins[registration_id] = record["initialTwin"] = initial_twin
            if self.state_file:
                self.state_file.parent.mkdir(parents=True, exist_ok=True)
                with self.state_file.open("a") as out:
                    out.write(json.dumps(record) + "\n")

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
        # the chain once per candidate, not once per group, halves the simulator's signature checks. A group's
        # primary and secondary signing CAs both count (a renewed CA usually keeps the subject of the old one:
        # the chain decides which of the two it runs through).
        issuers = {leaf.issuer, *(c.subject for c in intermediates)}
        for group in self.enrollment_groups():
            for ca in group.ca_certificates:
                if ca.subject not in issuers:
                    continue
                try:
                    validate_chain(leaf, intermediates, self.roots, ca, now)
                except ChainError:
                    continue
                return group
        raise ChainError("no enrollment matches the device certificate")

    def enrollment_groups(self) -> list[Enrollment]:
        """The groups: those of the service API emulator's store (what an operator or the product last wrote,
        read at each registration) before the ones handed to the simulator, one per enrollment group ID."""
        groups: dict[str, Enrollment] = {}
        if self.service_store is not None:
            for entry in self.service_store.entries(GROUPS):
                group = from_service_group_entry(entry, self.linked_hubs)
                groups[group.enrollment_id.lower()] = group
        for group in self.groups:
            groups.setdefault(group.enrollment_id.lower(), group)
        return list(groups.values())

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

    def _create_device(self, hub: str, device_id: str, enrollment: Enrollment, twin: dict, print_: str) -> bool:
        """Create the identity with this twin; when it exists already (a retried registration, or a simulator
        that lost its state), give it the thumbprint instead. True when created."""
        created = self.hubs[hub].create_device(device_id, iot_edge=enrollment.iot_edge, tags=twin.get("tags"),
                                               desired=(twin.get("properties") or {}).get("desired"),
                                               thumbprint=print_)
        if created is False:
            self.hubs[hub].update_credential(device_id, print_, iot_edge=enrollment.iot_edge)
            return False
        return True

    def _assign(self, enrollment: Enrollment, registration_id: str, hub: str, answer: dict,
                print_: str) -> tuple[str, str, dict]:
        """Put the device in the hub as DPS does, first time or again: (hub, device ID, result fields).

        First registration: create the identity (self-signed, the leaf's thumbprint) with the webhook's initial
        twin, else the enrollment's. Re-provisioning (DPS has an assignment; the service API's ReprovisionPolicy):
        - updateHubAssignment true, same hub: update the identity's thumbprint in place (re-created with the
          initial twin if it was deleted from the hub); the twin is kept (migrateDeviceData true) or reset to the
          initial twin (false);
        - updateHubAssignment true, another hub: create the device there with its twin read from the old hub
          (migrate) or the initial twin (reset), then remove it from the old hub ("If the device is changing IoT
          hubs, the device registration with the initial IoT hub will be removed", "Device reprovisioning
          concepts");
        - updateHubAssignment false ("the device will stay assigned to its current IoT hub"): the hub the webhook
          named is ignored; the identity's thumbprint is still updated and the twin kept (team reading: DPS
          rewrites the identity even then, MicrosoftDocs/azure-docs issue 24358, where "Never re-provision"
          still turned a CA device into a self-signed one; UNCONFIRMED by Microsoft's docs).
        An initialTwin in the webhook's answer overrides the migration settings (see __init__)."""
        previous = self.assignments.get(registration_id)
        webhook_twin = answer.get("initialTwin") if isinstance(answer.get("initialTwin"), dict) else None
        if previous is None:
            initial = webhook_twin or enrollment.initial_twin or {}
            created = self._create_device(hub, registration_id, enrollment, initial, print_)
            return hub, registration_id, {"substatus": "initialAssignment", "identity_created": created,
                                          "identity_updated": not created, "initial_twin": initial}
        # The initial configuration: what the webhook answers now, else what DPS received at the first
        # assignment and kept, else the enrollment's initialTwin.
        initial = webhook_twin or self.initial_twins.get(registration_id) or enrollment.initial_twin or {}
        old_hub, device_id = previous
        policy = enrollment.reprovision
        fields: dict = {"reprovisioned": True, "previous_hub": old_hub}
        if not policy.update_hub_assignment:
            hub, reset = old_hub, False
        else:
            reset = not policy.migrate_device_data or (webhook_twin is not None
                                                       and self.webhook_twin_overrides_migration)
        if hub == old_hub or old_hub not in self.hubs:
            link = self.hubs[hub]
            if link.update_credential(device_id, print_, iot_edge=enrollment.iot_edge if reset else None) is None:
                # deleted from the hub meanwhile: DPS creates it again, with the initial twin
                created = self._create_device(hub, device_id, enrollment, initial, print_)
                fields.update(identity_created=created, identity_updated=not created, twin_reset=True)
            else:
                fields["identity_updated"] = True
                if reset:
                    link.replace_twin(device_id, initial.get("tags"), (initial.get("properties") or {}).get("desired"))
                    fields["twin_reset"] = True
            fields["substatus"] = "reprovisionedToInitialAssignment"
            return hub, device_id, fields
        # another hub: move the device, with its twin (migrate) or the initial one (reset)
        twin = initial
        if not reset:
            old_twin = self.hubs[old_hub].get_twin(device_id)
            if old_twin is not None:
                desired = {k: v for k, v in ((old_twin.get("properties") or {}).get("desired") or {}).items()
                           if not k.startswith("$")}
                twin = {"tags": old_twin.get("tags") or {}, "properties": {"desired": desired}}
        created = self._create_device(hub, device_id, enrollment, twin, print_)
        if not created and reset:
            self.hubs[hub].replace_twin(device_id, twin.get("tags"), (twin.get("properties") or {}).get("desired"))
        self.hubs[old_hub].delete_device(device_id)
        fields.update(identity_created=created, identity_updated=not created, twin_reset=reset or twin is initial,
                      substatus="deviceDataReset" if reset else "deviceDataMigrated")
        return hub, device_id, fields

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
        status, answer, calls, unreachable = None, {}, 0, None
        for delay in [0.0, *dps_retry_delays(self.retry_scale)]:
            if delay:
                self._sleep(delay)
            calls += 1
            try:
                status, answer = self._call_webhook(enrollment, body)
                unreachable = None
            except HttpError as exc:  # no answer at all (refused, timed out): retried like a 5xx (team reading)
                status, answer, unreachable = None, {}, str(exc)
            if status is not None and status < 429:
                break
            log.info("dps: webhook answered %s for %s; retry %d of %d", status or "nothing", registration_id,
                     calls, DPS_RETRY_COUNT)
        error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
        webhook_code = error.get("code") or (f"http_{status}" if status and status != 200 else None)
        if status != 200:
            dps_code = UNAUTHORIZED_ACCESS if status == 401 else CUSTOM_ALLOCATION_FAILED
            what = (f"no answer after {calls} call(s) ({unreachable})" if status is None else
                    f"status {status}" + (f" after {calls} calls" if status >= 429 else ""))
            log.warning("dps: registration %s failed: webhook %s, its code %s -> %s (%d)", registration_id, what,
                        webhook_code, dps_code, DPS_ERROR_NUMBERS[dps_code])
            return result("failed", webhook_status=status, error_code=dps_code, webhook_code=webhook_code,
                          webhook_calls=calls,
                          error_message=f"{dps_code} ({DPS_ERROR_NUMBERS[dps_code]}): custom allocation failed "
                                        f"(webhook {what})")
        hub = answer.get("iotHubHostName")
        if hub not in body["linkedHubs"]:
            log.warning("dps: registration %s failed: webhook answered hub %r, not one of linkedHubs",
                        registration_id, hub)
            return result("failed", webhook_status=status, error_code=HUB_NOT_SPECIFIED, webhook_calls=calls,
                          error_message=f"{HUB_NOT_SPECIFIED} (400208): webhook answered hub {hub!r}, "
                                        f"not one of linkedHubs")

        print_ = thumbprint(leaf)
        try:
            hub, device_id, fields = self._assign(enrollment, registration_id, hub, answer, print_)
        except (LinkError, HttpError) as exc:
            return result("failed", webhook_status=status, error_code="device_creation_failed",
                          error_message=str(exc), webhook_calls=calls)
        self._remember(registration_id, hub, device_id, fields.pop("initial_twin", None))
        if fields.get("reprovisioned"):
            log.info("dps: %s re-provisioned to %s (%s; identity %s)", registration_id, hub, fields["substatus"],
                     "created" if fields.get("identity_created") else "updated")
        return result("assigned", assigned_hub=hub, device_id=device_id, payload=answer.get("payload"),
                      webhook_status=status, webhook_calls=calls, thumbprint=print_, **fields)
