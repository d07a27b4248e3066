"""Regional CA rotation rehearsal (docs/ca-rotation.md) on the whole stack: the west CA is renewed in Key Vault with a
new key. Sensors holding certificates of the old version keep provisioning; certificates issued from then on come
from the new version; DPS refuses them until the enrollment group carries the new CA as its secondary (Microsoft
Learn "How to roll X.509 device certificates", azure-docs articles/iot-dps/how-to-roll-certificates.md), and then
accepts both; the webhook trusts both versions (matched by authority key identifier)."""

from __future__ import annotations

import datetime as dt
import ssl
import time

import httpx
import pytest
from azure.keyvault.certificates import CertificateContentType, CertificatePolicy, KeyType
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from cert_lifecycle.authority import CertificateIssuer
from cert_lifecycle.wiring import Lifecycle
from local.dps.service import DEFAULT_PORT as DPS_PORT
from local.fleet.device import SimulatedSensor
from local.fleet.scenario import BASE_URL, Scenario, ScenarioOptions
from local.seed.pki import ensure_root_ca, import_pem, make_intermediate
from local.tls import ensure_tls
from tests.stack_helpers import app_environment

pytestmark = pytest.mark.integration
# The webhook reads a CA's versions again after CRL_CACHE_TTL_SECONDS; the issuer after CERT_CA_CACHE_SECONDS.
STACK_SETTINGS = {"CRL_CACHE_TTL_SECONDS": "1", "CERT_CA_CACHE_SECONDS": "0"}
WEST_CA, GROUP = "intermediate-ca-west", "sensors-west"
PEM = serialization.Encoding.PEM


def issued_sensor(services, device_id: str) -> SimulatedSensor:
    """A sensor with a certificate from the product's issuer (Key Vault's latest version of the facility's CA)."""
    lifecycle = Lifecycle(services)
    issuer = CertificateIssuer(lifecycle.cas, lifecycle.records, lifecycle.audit, lifecycle.settings)
    sensor = SimulatedSensor(device_id)
    sensor.install_certificate(issuer.issue(sensor.csr_pem(), actor="test:ca-rotation").to_body())
    return sensor


def issuer_key(certificate: x509.Certificate) -> bytes:
    """The key identifier of the CA key that signed a device certificate (its authority key identifier)."""
    return certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def own_key(ca: x509.Certificate) -> bytes:
    return ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def dps_service(stack, services) -> httpx.Client:
    """The DPS service API emulator, as an operator's tooling reaches it (a Microsoft Entra token for DPS)."""
    token = services.credential.get_token("https://azure-devices-provisioning.net/.default").token
    return httpx.Client(base_url=f"https://localhost:{DPS_PORT}", timeout=30,
                        verify=ssl.create_default_context(cafile=str(ensure_tls(stack.state_dir).ca_bundle)),
                        headers={"Authorization": f"Bearer {token}"})


def test_a_rotated_regional_ca_keeps_old_sensors_and_admits_new_ones_once_dps_has_it_as_secondary(stack, services):
    with app_environment(stack.settings_path):
        old_ca = x509.load_der_x509_certificate(bytes(services.certificates.get_certificate(WEST_CA).cer))
        before = issued_sensor(services, "sensor-temp-FAC03-ROTOLD1")
        scenario = Scenario(services, stack.state_dir, ScenarioOptions())
        with dps_service(stack, services) as dps_api:  # the group as deployed: the current CA as its primary
            group = {"enrollmentGroupId": GROUP, "provisioningStatus": "enabled", "allocationPolicy": "custom",
                     "attestation": {"type": "x509", "x509": {"signingCertificates": {
                         "primary": {"certificate": old_ca.public_bytes(PEM).decode()}}}},
                     "customAllocationDefinition": {"webhookUrl": f"{BASE_URL}/api/allocate",
                                                    "apiVersion": "2021-10-01"},
                     "reprovisionPolicy": {"updateHubAssignment": True, "migrateDeviceData": True}}
            created = dps_api.put(f"/enrollmentGroups/{GROUP}", params={"api-version": "2021-10-01"}, json=group)
            assert created.status_code == 200, created.text
            dps = scenario.dps([])
            assert before.power_on(dps).status == "assigned", before.registration

            # The rotation: a new version of the CA in Key Vault, with a new key, signed by the offline root.
            root = ensure_root_ca(stack.state_dir / "pki")
            new_ca, new_key = make_intermediate(root, WEST_CA, "west")
            policy = CertificatePolicy(issuer_name="Unknown", subject=new_ca.subject.rfc4514_string(),
                                       exportable=False, key_type=KeyType.ec,
                                       content_type=CertificateContentType.pem)
            services.certificates.import_certificate(WEST_CA, import_pem(new_ca, new_key, [root.certificate]),
                                                     policy=policy)
            after = issued_sensor(services, "sensor-temp-FAC03-ROTNEW1")
            assert issuer_key(before.certificate) == own_key(old_ca)
            assert issuer_key(after.certificate) == own_key(new_ca) != own_key(old_ca)

            refused = after.power_on(dps)  # the group knows only the old CA: DPS refuses the chain
            assert (refused.status, refused.error_code) == ("failed", "unauthorized"), refused

            current = dps_api.get(f"/enrollmentGroups/{GROUP}", params={"api-version": "2021-10-01"}).json()
            current["attestation"]["x509"]["signingCertificates"]["secondary"] = {
                "certificate": new_ca.public_bytes(PEM).decode()}
            updated = dps_api.put(f"/enrollmentGroups/{GROUP}", params={"api-version": "2021-10-01"}, json=current,
                                  headers={"If-Match": current["etag"]})
            assert updated.status_code == 200, updated.text
            assert updated.json()["attestation"]["x509"]["signingCertificates"]["secondary"]["info"][
                "sha1Thumbprint"].upper() == new_ca.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303

        time.sleep(1.5)  # past CRL_CACHE_TTL_SECONDS: the webhook has read the CA's versions again
        admitted = after.power_on(dps)
        assert (admitted.status, admitted.assigned_hub) == ("assigned", "localhost:8441"), admitted
        first_hub = before.registration.assigned_hub
        again = before.power_on(dps)  # an old-version sensor registering again: still accepted, same hub
        assert (again.status, again.assigned_hub, again.reprovisioned) == ("assigned", first_hub, True), again
        renewed = issued_sensor(services, "sensor-temp-FAC03-ROTOLD2")  # issuance from now on: the new version
        assert issuer_key(renewed.certificate) == own_key(new_ca)
    assert dt.datetime.now(dt.UTC) < old_ca.not_valid_after_utc  # the old version is still valid: both serve
