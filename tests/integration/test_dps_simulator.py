"""The DPS simulator against the whole stack: chain validation, the real webhook, device creation in a hub."""

from __future__ import annotations

import secrets

import pytest
from cryptography import x509
from msrest.exceptions import HttpOperationError

from local.dps.enrollments import Enrollment
from local.dps.linked_hub import thumbprint
from local.dps.simulator import DpsSimulator
from local.dps.store import EnrollmentStore
from local.iothub.config import stack_connection_string
from local.secrets import stack_secret
from local.seed import data
from tests.pki_helpers import make_ca
from tests.stack_helpers import BASE_URL, VaultCa

pytestmark = pytest.mark.integration
HUB_NAMES = [h.host_name for h in data.HUBS]


@pytest.fixture(scope="module")
def cas(services):
    return {region: VaultCa.load(services, name) for region, name in data.CA_NAMES.items()}


@pytest.fixture(scope="module")
def dps(stack, services, cas, tmp_path_factory):
    root = x509.load_pem_x509_certificate((stack.state_dir / "pki" / "root-ca.pem").read_bytes())
    webhook = f"{BASE_URL}/api/allocate"
    enrollments = [Enrollment(f"sensors-{region}", ca.certificate, HUB_NAMES, webhook) for region, ca in cas.items()]
    links = {h.host_name: stack_connection_string(stack.state_dir, h.name, h.host_name) for h in data.HUBS}
    return DpsSimulator(enrollments, HUB_NAMES, [root], links,
                        function_key=stack_secret(stack.state_dir, "function-key-default"),
                        state_file=tmp_path_factory.mktemp("dps") / "registrations.jsonl",
                        enrollment_store=EnrollmentStore(stack.state_dir))  # what the DPS service emulator holds


def cn(facility="FAC06", type_code="press") -> str:
    return f"sensor-{type_code}-{facility}-SN{secrets.randbelow(10**8):08d}"


def test_sensor_is_registered_in_its_plant_hub_with_the_webhook_twin(dps, cas, services):
    ca = cas["central"]
    leaf = ca.issue(cn("FAC06"))
    result = dps.register(leaf, [ca.certificate], payload={"firmware": "2.4.1"})
    assert result.status == "assigned", result
    assert result.assigned_hub == "localhost:8442"
    assert result.payload == {"facility": "FAC06", "region": "central", "hubRegion": "central"}
    twin = services.registry_manager(result.assigned_hub).get_twin(result.device_id)
    assert twin.tags["facility"] == "FAC06" and twin.tags["sensorType"] == "pressure"
    device = services.registry_manager(result.assigned_hub).get_device(result.device_id)
    # DPS creates X.509 devices as self-signed identities holding the leaf's thumbprint (local/dps/linked_hub.py)
    assert device.authentication.type == "selfSigned"
    assert device.authentication.x509_thumbprint.primary_thumbprint == thumbprint(leaf) == result.thumbprint


def test_registering_again_keeps_the_device_where_it_is(dps, cas, services):
    ca = cas["central"]
    leaf = ca.issue(cn("FAC07", "vib"))
    first = dps.register(leaf, [ca.certificate])
    second = dps.register(leaf, [ca.certificate])
    assert first.status == second.status == "assigned"
    assert first.assigned_hub == second.assigned_hub
    rows = services.database.fetch_all(
        "SELECT outcome, hub FROM provisioning_events WHERE registration_id = ?", [first.registration_id])
    assert [r["outcome"] for r in rows] == ["allocated", "allocated"]


def test_webhook_refusal_fails_the_registration_with_its_code_and_creates_nothing(dps, cas, services):
    ca = cas["east"]
    result = dps.register(ca.issue(cn("FAC42", "flow")), [ca.certificate])
    # the device sees DPS's code; the webhook's own code is the simulator's (and the audit table's) to show
    assert (result.status, result.webhook_status, result.error_code) == ("failed", 404, "CustomAllocationFailed")
    assert (result.webhook_code, result.error_number) == ("unknown_facility", 400207)
    for hub in HUB_NAMES:
        with pytest.raises(HttpOperationError) as missing:
            services.registry_manager(hub).get_device(result.registration_id)
        assert missing.value.response.status_code == 404


def test_certificate_outside_every_enrollment_never_reaches_the_webhook(dps, services):
    rogue = make_ca("rogue", "west")
    result = dps.register(rogue.issue(cn("FAC01", "temp")), [rogue.certificate])
    assert (result.status, result.error_code, result.webhook_status) == ("failed", "unauthorized", None)
    rows = services.database.fetch_all(
        "SELECT outcome FROM provisioning_events WHERE registration_id = ?", [result.registration_id])
    assert rows == []
