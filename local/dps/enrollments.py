"""DPS enrollment records: groups (X.509 CA attestation against a regional intermediate) and individual
enrollments (which take precedence, as in DPS). Shaped like DPS's service API so the webhook request carries
what DPS would put in it."""

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

    @property
    def is_group(self) -> bool:
        return self.individual_certificate is None

    def record(self) -> dict:
        """The enrollment as DPS puts it in the AllocationRequest (webhook URL with its key masked)."""
        stamp = self.created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "attestation": {"type": "x509"},
            "capabilities": {"iotEdge": self.iot_edge},
            "etag": f'"{abs(hash(self.enrollment_id)) % 10**12:012d}-0000-0300-0000-000000000000"',
            "provisioningStatus": self.provisioning_status,
            "reprovisionPolicy": {"updateHubAssignment": self.reprovision.update_hub_assignment,
                                  "migrateDeviceData": self.reprovision.migrate_device_data},
            "createdDateTimeUtc": stamp,
            "lastUpdatedDateTimeUtc": stamp,
            "allocationPolicy": "custom",
            "iotHubs": list(self.iot_hubs),
            "customAllocationDefinition": {"webhookUrl": self.webhook_url.split("?")[0] + "?****",
                                           "apiVersion": self.api_version},
        }
        if self.initial_twin:
            body["initialTwin"] = self.initial_twin
        if self.is_group:
            return {"enrollmentGroupId": self.enrollment_id, **body}
        return {"registrationId": self.enrollment_id, **body}
