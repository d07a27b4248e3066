"""Documented DPS AllocationRequest bodies in, the documented AllocationResponse shape out (docs/contracts.md 1)."""

import json
import re
from pathlib import Path

import pytest

from tests.allocation_harness import HUBS, build_webhook, fill, iso
from tests.pki_helpers import der_b64

FIXTURES = Path(__file__).parent / "dps"
RID = "sensor-temp-FAC03-SN482019"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def webhook(tmp_path, monkeypatch):
    return build_webhook(tmp_path, monkeypatch)


def assert_allocation_response(body: dict, linked_hubs: list[str]) -> None:
    assert set(body) == {"iotHubHostName", "initialTwin", "payload"}
    assert body["iotHubHostName"] in linked_hubs
    assert set(body["initialTwin"]) == {"tags", "properties"}
    assert set(body["initialTwin"]["properties"]) == {"desired"}
    assert isinstance(body["payload"], dict)


@pytest.mark.parametrize("name,migrate", [("x509-group.json", True), ("x509-group-payload.json", True),
                                          ("x509-individual.json", False), ("x509-reprovision.json", False)])
def test_x509_requests_get_the_documented_response(webhook, name, migrate):
    """A first registration, and a re-provisioning under "reset to initial config", get the initial twin."""
    cert = webhook.ca.issue(RID)
    request = fill(fixture(name), DEVICE_CERT=der_b64(cert))
    enrollment = request.get("enrollmentGroup") or request["individualEnrollment"]
    enrollment["reprovisionPolicy"] = {"updateHubAssignment": True, "migrateDeviceData": migrate}
    status, body = webhook.post(request)
    assert status == 200, body
    assert_allocation_response(body, request["linkedHubs"])
    tags = body["initialTwin"]["tags"]
    assert tags == {
        "sensorType": "temperature", "sensorTypeCode": "temp", "facility": "FAC03", "region": "west",
        "serial": "SN482019",
        "certificate": {"issuer": "intermediate-ca-west", "serialNumber": format(cert.serial_number, "X"),
                        "notBefore": iso(cert.not_valid_before_utc), "notAfter": iso(cert.not_valid_after_utc)},
        "onboarding": {"allocatedAt": tags["onboarding"]["allocatedAt"], "policyVersion": tags["onboarding"][
            "policyVersion"], "crossRegion": False},
    }
    assert ISO_Z.match(tags["onboarding"]["allocatedAt"])
    assert body["initialTwin"]["properties"]["desired"] == {"onboarding": {"state": "awaitingConfiguration"}}
    assert body["payload"] == {"facility": "FAC03", "region": "west", "hubRegion": "west"}
    assert "key" not in json.dumps(body).lower()


@pytest.mark.parametrize("name", ["x509-individual.json", "x509-reprovision.json"])
def test_reprovisioning_that_migrates_device_data_keeps_the_twin_the_hub_has(webhook, name):
    """A renewed sensor provisions again (docs/contracts.md 7): an initialTwin in the answer would be set on the
    device and put a configured sensor back to awaitingConfiguration, so under the default policy there is none."""
    request = fill(fixture(name), DEVICE_CERT=der_b64(webhook.ca.issue(RID)))
    status, body = webhook.post(request)
    assert status == 200, body
    assert set(body) == {"iotHubHostName", "payload"}
    assert body["iotHubHostName"] in request["linkedHubs"]


def test_a_reprovision_policy_that_is_not_an_object_is_refused(webhook):
    request = fill(fixture("x509-reprovision.json"), DEVICE_CERT=der_b64(webhook.ca.issue(RID)))
    request["enrollmentGroup"]["reprovisionPolicy"] = "migrate"
    status, body = webhook.post(request)
    assert (status, body["error"]["code"]) == (400, "invalid_request")


def test_initial_registration_goes_to_the_preferred_hub(webhook):
    status, body = webhook.post(fill(fixture("x509-group.json"), DEVICE_CERT=der_b64(webhook.ca.issue(RID))))
    assert (status, body["iotHubHostName"]) == (200, "hub-west.azure-devices.net")


def test_reprovisioning_keeps_a_current_hub_in_region(webhook):
    request = fill(fixture("x509-reprovision.json"), DEVICE_CERT=der_b64(webhook.ca.issue(RID)))
    request["deviceRuntimeContext"]["currentIotHubHostName"] = "hub-west2.azure-devices.net"
    webhook.device_counts["hub-west2.azure-devices.net"] = 99
    status, body = webhook.post(request)
    assert (status, body["iotHubHostName"]) == (200, "hub-west2.azure-devices.net")


def test_table_spelling_of_current_hub_is_read_too(webhook):
    # x509-individual.json says currentIoTHubHostName = the central hub, outside FAC03's region: not kept.
    status, body = webhook.post(fill(fixture("x509-individual.json"), DEVICE_CERT=der_b64(webhook.ca.issue(RID))))
    assert (status, body["iotHubHostName"]) == (200, "hub-west.azure-devices.net")
    request = fill(fixture("x509-individual.json"), DEVICE_CERT=der_b64(webhook.ca.issue(RID)))
    request["deviceRuntimeContext"]["currentIoTHubHostName"] = "hub-west2.azure-devices.net"
    assert webhook.post(request)[1]["iotHubHostName"] == "hub-west2.azure-devices.net"


def test_certificate_info_object_shape_is_tolerated(webhook):
    cert = webhook.ca.issue(RID)
    request = fill(fixture("x509-info-object.json"), ISSUER=cert.issuer.rfc4514_string(),
                   SERIAL=format(cert.serial_number, "X"))
    status, body = webhook.post(request)
    assert status == 200, body
    assert body["initialTwin"]["tags"]["certificate"]["serialNumber"] == format(cert.serial_number, "X")


def test_symmetric_key_example_from_the_docs_is_refused(webhook):
    status, body = webhook.post(fixture("symmetric-key-group.json"))
    assert status == 400
    assert body["error"]["code"] == "attestation_not_supported"


def test_every_fixture_names_only_known_hubs():
    for path in FIXTURES.glob("*.json"):
        assert set(json.loads(path.read_text())["linkedHubs"]) <= set(HUBS), path.name
