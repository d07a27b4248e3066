"""DPS enrollment records: groups (X.509 CA attestation against a regional intermediate) and individual
enrollments (which take precedence, as in DPS). Shaped like DPS's service API so the webhook request carries
what DPS would put in it.

A group may hold two signing CA certificates, primary and secondary (service API X509Attestation
signingCertificates): a device whose chain runs through either matches it, which is how an expiring CA is rolled
("Enrollment groups and certificate expiration": add the new CA as the secondary, delete the primary once it has
expired; azure-docs articles/iot-dps/how-to-roll-certificates.md). Groups too may come from the service API
emulator's store (from_service_group_entry), where an operator or product code puts them.

Individual enrollments come from two places: the ones a script hands the simulator (gateways), and the ones
created through the service API emulator (local/dps/service.py), read from its store with from_service_entry():
for example the disabled enrollment the function app creates for a revoked device."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509


@dataclass(frozen=True)
class ReprovisionPolicy:
    update_hub_assignment: bool = True
    migrate_device_data: bool = True


@dataclass
class Enrollment:
    enrollment_id: str  # enrollmentGroupId, or the registrationId of an individual enrollment
    ca_certificate: x509.Certificate | None  # group: the signing CA; individual: None (leaf pinned below)
    iot_hubs: list[str]
    webhook_url: str
    individual_certificate: x509.Certificate | None = None
    iot_edge: bool = False
    provisioning_status: str = "enabled"
    reprovision: ReprovisionPolicy = field(default_factory=ReprovisionPolicy)
    initial_twin: dict = field(default_factory=dict)
    api_version: str = "2021-10-01"
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    secondary_certificate: x509.Certificate | None = None  # individual: the attestation's secondary certificate
    etag: str | None = None  # as the service API recorded it; None: made up from the ID
    allocation_policy: str = "custom"
    secondary_ca_certificate: x509.Certificate | None = None  # group: the second signing CA (a CA being rolled)

    @property
    def is_group(self) -> bool:
        return self.individual_certificate is None

    @property
    def ca_certificates(self) -> tuple[x509.Certificate, ...]:
        """The signing CAs a device's chain may run through to match this group (primary, secondary)."""
        return tuple(c for c in (self.ca_certificate, self.secondary_ca_certificate) if c is not None)

    @property
    def individual_certificates(self) -> tuple[x509.Certificate, ...]:
        """The certificates a device may present to match this individual enrollment (primary, secondary)."""
        return tuple(c for c in (self.individual_certificate, self.secondary_certificate) if c is not None)

    def record(self) -> dict:
        """The enrollment as DPS puts it in the AllocationRequest (webhook URL with its key masked)."""
        stamp = self.created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "attestation": {"type": "x509"},
            "capabilities": {"iotEdge": self.iot_edge},
            "etag": self.etag or f'"{abs(hash(self.enrollment_id)) % 10**12:012d}-0000-0300-0000-000000000000"',
            "provisioningStatus": self.provisioning_status,
            "reprovisionPolicy": {"updateHubAssignment": self.reprovision.update_hub_assignment,
                                  "migrateDeviceData": self.reprovision.migrate_device_data},
            "createdDateTimeUtc": stamp,
            "lastUpdatedDateTimeUtc": stamp,
            "allocationPolicy": self.allocation_policy,
            "iotHubs": list(self.iot_hubs),
            "customAllocationDefinition": {"webhookUrl": self.webhook_url.split("?")[0] + "?****",
                                           "apiVersion": self.api_version},
        }
        if self.initial_twin:
            body["initialTwin"] = self.initial_twin
        if self.is_group:
            return {"enrollmentGroupId": self.enrollment_id, **body}
        return {"registrationId": self.enrollment_id, **body}


def _pem(entry: dict, slot: str) -> x509.Certificate | None:
    text = (entry.get("certificates") or {}).get(slot)
    return x509.load_pem_x509_certificate(text.encode()) if text else None


def _parse_time(text: str | None) -> dt.datetime:
    if not text:
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def from_service_entry(entry: dict, linked_hubs: list[str]) -> Enrollment:
    """An individual enrollment of the service API emulator's store (local/dps/store.py) as the simulator uses it.
    Hubs default to every linked hub, as in DPS when an enrollment names none."""
    record = entry["record"]
    custom = record.get("customAllocationDefinition") or {}
    policy = record.get("reprovisionPolicy") or {}
    return Enrollment(
        enrollment_id=record["registrationId"],
        ca_certificate=None,
        iot_hubs=list(record.get("iotHubs") or linked_hubs),
        webhook_url=custom.get("webhookUrl", ""),
        individual_certificate=_pem(entry, "primary"),
        iot_edge=bool((record.get("capabilities") or {}).get("iotEdge", False)),
        provisioning_status=record.get("provisioningStatus", "enabled"),
        reprovision=ReprovisionPolicy(policy.get("updateHubAssignment", True), policy.get("migrateDeviceData", True)),
        initial_twin=record.get("initialTwin") or {},
        api_version=custom.get("apiVersion", "2021-10-01"),
        created=_parse_time(record.get("createdDateTimeUtc")),
        secondary_certificate=_pem(entry, "secondary"),
        etag=record.get("etag"),
        allocation_policy=record.get("allocationPolicy") or ("custom" if custom else "hashed"),
    )


def from_service_group_entry(entry: dict, linked_hubs: list[str]) -> Enrollment:
    """An enrollment group of the service API emulator's store (signing certificates primary and secondary) as
    the simulator uses it. Hubs default to every linked hub."""
    record = entry["record"]
    custom = record.get("customAllocationDefinition") or {}
    policy = record.get("reprovisionPolicy") or {}
    return Enrollment(
        enrollment_id=record["enrollmentGroupId"],
        ca_certificate=_pem(entry, "primary"),
        iot_hubs=list(record.get("iotHubs") or linked_hubs),
        webhook_url=custom.get("webhookUrl", ""),
        iot_edge=bool((record.get("capabilities") or {}).get("iotEdge", False)),
        provisioning_status=record.get("provisioningStatus", "enabled"),
        reprovision=ReprovisionPolicy(policy.get("updateHubAssignment", True), policy.get("migrateDeviceData", True)),
        initial_twin=record.get("initialTwin") or {},
        api_version=custom.get("apiVersion", "2021-10-01"),
        created=_parse_time(record.get("createdDateTimeUtc")),
        etag=record.get("etag"),
        allocation_policy=record.get("allocationPolicy") or ("custom" if custom else "hashed"),
        secondary_ca_certificate=_pem(entry, "secondary"),
    )
