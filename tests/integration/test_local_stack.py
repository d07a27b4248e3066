"""The whole local stack, as `make run` starts it, driven over HTTP like DPS and an operator would."""

from __future__ import annotations

import secrets
import time

import pytest

from local.secrets import stack_secret
from local.seed import data
from tests.stack_helpers import CACHE_TTL, VaultCa, dps_request, http

pytestmark = pytest.mark.integration
WEST2 = data.LocalHub("west", "iothub-west2-local", 8444)
HUBS = [*data.HUBS, WEST2]
STACK_HUBS = HUBS


@pytest.fixture(scope="module")
def west_ca(services):
    return VaultCa.load(services, "intermediate-ca-west")


@pytest.fixture(scope="module")
def function_key(stack):
    return stack_secret(stack.state_dir, "function-key-default")


def new_cn(type_code="temp", facility="FAC03") -> str:
    return f"sensor-{type_code}-{facility}-SN{secrets.randbelow(10**8):08d}"


LINKED = [h.host_name for h in HUBS]


def test_health_reports_every_component_ok(stack, function_key):
    status, body = http("GET", "/api/health/details", key=function_key)
    assert status == 200, body
    expected = {"sql", "blob", "queue", *(f"keyvault:{n}" for n in data.CA_NAMES.values()),
                *(f"crl:{n}" for n in data.CA_NAMES.values()), *(f"iothub:{h.host_name}" for h in HUBS)}
    assert set(body["components"]) == expected
    assert all(c["status"] == "ok" for c in body["components"].values())


def test_anonymous_health_tells_the_status_only(stack):
    status, body = http("GET", "/api/health")
    assert (status, body) == (200, {"status": "ok"})
    assert http("GET", "/api/health/details")[0] == 401
    assert http("GET", "/api/health/details", key="wrong")[0] == 401


def test_allocate_needs_the_function_key(stack):
    assert http("POST", "/api/allocate", {})[0] == 401
    assert http("POST", "/api/allocate", {}, key="wrong")[0] == 401


def test_sensor_with_a_certificate_from_the_regional_ca_gets_its_plant_hub(stack, west_ca, function_key):
    cert = west_ca.issue(new_cn())
    status, body = http("POST", "/api/allocate", dps_request(cert, LINKED), key=function_key)
    assert status == 200, body
    assert body["iotHubHostName"] == "localhost:8441"
    tags = body["initialTwin"]["tags"]
    assert (tags["sensorType"], tags["facility"], tags["region"]) == ("temperature", "FAC03", "west")
    assert tags["certificate"]["issuer"] == "intermediate-ca-west"
    assert tags["certificate"]["serialNumber"] == format(cert.serial_number, "X")


def test_revoked_certificate_is_refused_after_the_crl_is_republished(stack, services, west_ca, function_key):
    cert = west_ca.issue(new_cn())
    assert http("POST", "/api/allocate", dps_request(cert, LINKED), key=function_key)[0] == 200
    west_ca.publish_crl(services, [cert.serial_number])
    time.sleep(CACHE_TTL + 0.5)
    status, body = http("POST", "/api/allocate", dps_request(cert, LINKED), key=function_key)
    assert (status, body["error"]["code"]) == (403, "certificate_revoked")
    alerts = services.queue("security-alerts").peek_messages(max_messages=32)
    texts = [m.content for m in alerts]
    assert any(format(cert.serial_number, "X") in text for text in texts)
    assert http("POST", "/api/allocate", dps_request(west_ca.issue(new_cn()), LINKED), key=function_key)[0] == 200


@pytest.mark.parametrize("corrupt", ["delete", "garbage", "foreign_signature"])
def test_without_a_valid_crl_every_request_is_refused(stack, services, west_ca, function_key, corrupt):
    blob = services.blob_service.get_blob_client(services.settings.crl_container, "intermediate-ca-west.crl")
    if corrupt == "delete":
        blob.delete_blob()
    elif corrupt == "garbage":
        blob.upload_blob(b"not a CRL", overwrite=True)
    else:
        east = VaultCa.load(services, "intermediate-ca-east")
        blob.upload_blob(east.crl_der([], 9), overwrite=True)
    try:
        time.sleep(CACHE_TTL + 0.5)
        for _ in range(2):
            status, body = http("POST", "/api/allocate", dps_request(west_ca.issue(new_cn()), LINKED),
                                key=function_key)
            assert (status, body["error"]["code"]) == (503, "crl_unavailable")  # DPS retries a 503
    finally:
        west_ca.publish_crl(services, [])
        time.sleep(CACHE_TTL + 0.5)
    assert http("POST", "/api/allocate", dps_request(west_ca.issue(new_cn()), LINKED), key=function_key)[0] == 200


def test_full_preferred_hub_spills_over_to_another_hub_in_the_region(stack, services, west_ca, function_key):
    db = services.database
    db.execute("UPDATE iot_hubs SET max_devices = 1 WHERE host_name = ?", ["localhost:8441"])
    services.registry_manager("localhost:8441").create_device_with_certificate_authority(
        f"filler-{secrets.token_hex(4)}", "enabled")
    try:
        time.sleep(CACHE_TTL + 0.5)
        status, body = http("POST", "/api/allocate", dps_request(west_ca.issue(new_cn()), LINKED), key=function_key)
        assert status == 200, body
        assert body["iotHubHostName"] == WEST2.host_name
        assert body["initialTwin"]["tags"]["onboarding"]["crossRegion"] is False
    finally:
        db.execute("UPDATE iot_hubs SET max_devices = ? WHERE host_name = ?", [data.HUB_MAX_DEVICES, "localhost:8441"])


def test_every_decision_is_in_the_audit_trail(stack, services):
    rows = services.database.fetch_all("SELECT outcome, reason_code FROM provisioning_events")
    outcomes = {(r["outcome"], r["reason_code"]) for r in rows}
    assert ("allocated", None) in outcomes
    assert ("rejected", "certificate_revoked") in outcomes
    assert ("rejected", "crl_unavailable") in outcomes
