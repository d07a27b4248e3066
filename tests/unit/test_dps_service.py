"""The local DPS service API emulator's wire contract (raw HTTP), its store and `python -m local.dps enrollments`."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import ssl

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization

from local.dps.__main__ import enrollment_rows, format_rows, main
from local.dps.service import OWNER_POLICY, create_app, stack_connection_string
from local.dps.store import EnrollmentStore, store_path
from local.identity import issue_token
from local.iothub.auth import make_sas
from local.serve import free_port, serve_in_thread
from tests.pki_helpers import make_ca

SIGNING_KEY = secrets.token_bytes(32)
OWNER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
API = {"api-version": "2021-10-01"}


@pytest.fixture(scope="module")
def dps_state(tmp_path_factory):
    return tmp_path_factory.mktemp("dps-service")


@pytest.fixture(scope="module")
def service(tls, dps_state):
    port = free_port()
    server = serve_in_thread(create_app(dps_state, SIGNING_KEY, f"localhost:{port}", {OWNER_POLICY: OWNER_KEY}),
                             port, tls)
    context = ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])
    token, _ = issue_token(SIGNING_KEY, "https://azure-devices-provisioning.net")
    with httpx.Client(base_url=f"https://localhost:{port}", verify=context, timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        client.port = port
        yield client
    server.stop()


@pytest.fixture(scope="module")
def ca():
    return make_ca("intermediate-ca-central", "central")


def cn() -> str:
    return f"sensor-press-FAC06-SN{secrets.randbelow(10**8):08d}"


def enrollment(registration_id: str, cert, **extra) -> dict:
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return {"registrationId": registration_id, "provisioningStatus": "disabled",
            "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
            **extra}


def test_put_answers_the_enrollment_with_certificate_info_and_no_certificate(service, ca):
    device = cn()
    cert = ca.issue(device)
    answer = service.put(f"/enrollments/{device}", params=API, json=enrollment(device, cert))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    primary = body["attestation"]["x509"]["clientCertificates"]["primary"]
    assert "certificate" not in primary
    info = primary["info"]
    der = cert.public_bytes(serialization.Encoding.DER)
    assert info["sha1Thumbprint"] == hashlib.sha1(der).hexdigest().upper()  # noqa: S324
    assert info["sha256Thumbprint"] == cert.fingerprint(hashes.SHA256()).hex().upper()
    assert info["serialNumber"] == format(cert.serial_number, "X") and info["version"] == 3
    assert info["subjectName"] == f"CN={device}"
    assert info["issuerName"] == "CN=Test Intermediate CA central, O=Test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["notAfterUtc"])
    assert body["provisioningStatus"] == "disabled" and body["capabilities"] == {"iotEdge": False}
    assert body["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": True}
    assert body["etag"].startswith('"') and body["createdDateTimeUtc"] == body["lastUpdatedDateTimeUtc"]
    again = service.put(f"/enrollments/{device}", params=API, json=enrollment(device, cert)).json()
    assert again["etag"] != body["etag"] and again["createdDateTimeUtc"] == body["createdDateTimeUtc"]


def test_registration_ids_are_case_insensitive(service, ca):
    device = cn()
    service.put(f"/enrollments/{device}", params=API, json=enrollment(device, ca.issue(device)))
    answer = service.get(f"/enrollments/{device.upper()}", params=API)
    assert answer.status_code == 200 and answer.json()["registrationId"] == device


def test_a_pem_without_line_breaks_is_read(service, ca):
    """azure-iot-sdk-csharp's X509CertificateWithInfo writes BEGIN/END around base64 DER, without newlines."""
    device = cn()
    cert = ca.issue(device)
    flat = ("-----BEGIN CERTIFICATE-----" + base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
            + "-----END CERTIFICATE-----")
    body = enrollment(device, cert)
    body["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"] = flat
    assert service.put(f"/enrollments/{device}", params=API, json=body).status_code == 200


@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda b: b.update(registrationId="sensor-other"), "does not match"),
    (lambda b: b.pop("attestation"), "attestation"),
    (lambda b: b.update(attestation={"type": "symmetricKey"}), "not supported"),
    (lambda b: b["attestation"]["x509"]["clientCertificates"]["primary"].update(certificate="bm90IGEgY2VydA=="),
     "PEM"),
    (lambda b: b.update(provisioningStatus="paused"), "provisioningStatus"),
    (lambda b: b.update(allocationPolicy="custom"), "customAllocationDefinition"),
])
def test_invalid_enrollments_are_400(service, ca, mutate, fragment):
    device = cn()
    body = enrollment(device, ca.issue(device))
    mutate(body)
    answer = service.put(f"/enrollments/{device}", params=API, json=body)
    assert answer.status_code == 400 and fragment in answer.json()["message"]
    assert service.get(f"/enrollments/{device}", params=API).status_code == 404


def test_api_version_is_required_and_checked(service):
    assert service.get(f"/enrollments/{cn()}").status_code == 400
    assert service.get(f"/enrollments/{cn()}", params={"api-version": "1999-01-01"}).status_code == 400


def test_bad_registration_ids_are_400(service):
    assert service.get("/enrollments/-leading-dash", params=API).status_code == 400
    assert service.get(f"/enrollments/{'a' * 129}", params=API).status_code == 400


def test_missing_enrollments_are_404_with_dps_error_details(service):
    answer = service.get(f"/enrollments/{cn()}", params=API)
    assert answer.status_code == 404
    body = answer.json()
    assert body["errorCode"] == 404201 and answer.headers["x-ms-error-code"] == "404201"
    assert service.delete(f"/enrollments/{cn()}", params=API).status_code == 404


def test_if_match_is_enforced_on_put_and_delete(service, ca):
    device = cn()
    created = service.put(f"/enrollments/{device}", params=API, json=enrollment(device, ca.issue(device))).json()
    stale = service.put(f"/enrollments/{device}", params=API, json=enrollment(device, ca.issue(device)),
                        headers={"If-Match": '"not-the-etag"'})
    assert stale.status_code == 412 and stale.json()["errorCode"] == 412002
    assert service.delete(f"/enrollments/{device}", params=API, headers={"If-Match": '"x"'}).status_code == 412
    missing = cn()
    assert service.put(f"/enrollments/{missing}", params=API, json=enrollment(missing, ca.issue(missing)),
                       headers={"If-Match": created["etag"]}).status_code == 412
    assert service.delete(f"/enrollments/{device}", params=API,
                          headers={"If-Match": created["etag"]}).status_code == 204
    assert service.get(f"/enrollments/{device}", params=API).status_code == 404


def test_query_pages_with_continuation_tokens(service, ca):
    for _ in range(3):
        device = cn()
        service.put(f"/enrollments/{device}", params=API, json=enrollment(device, ca.issue(device)))
    seen, token, pages = [], None, 0
    while True:
        headers = {"x-ms-max-item-count": "2", **({"x-ms-continuation": token} if token else {})}
        answer = service.post("/enrollments/query", params=API, json={"query": "*"}, headers=headers)
        assert answer.status_code == 200 and answer.headers["x-ms-item-type"] == "enrollment"
        assert len(answer.json()) <= 2
        seen += [e["registrationId"] for e in answer.json()]
        pages += 1
        token = answer.headers.get("x-ms-continuation")
        if not token:
            break
    assert pages >= 2 and len(seen) == len(set(seen)) >= 3
    sql = service.post("/enrollments/query", params=API, json={"query": "SELECT * FROM enrollments"})
    assert sql.status_code == 200
    assert service.post("/enrollments/query", params=API, json={"query": "SELECT * FROM x"}).status_code == 400


def test_attestation_mechanism_and_unserved_paths(service, ca):
    device = cn()
    service.put(f"/enrollments/{device}", params=API, json=enrollment(device, ca.issue(device)))
    mechanism = service.post(f"/enrollments/{device}/attestationmechanism", params=API)
    assert mechanism.status_code == 200 and mechanism.json()["type"] == "x509"
    assert service.post("/enrollments", params=API, json={"mode": "create", "enrollments": []}).status_code == 501
    missing = service.get("/enrollmentGroups/sensors-west", params=API)  # groups are served: this one is unknown
    assert missing.status_code == 404 and missing.json()["errorCode"] == 404202
    assert service.patch(f"/enrollments/{device}", params=API, json={}).status_code == 405


def test_sas_tokens_must_name_this_host_and_be_signed_with_the_policy_key(service, dps_state):
    host = f"localhost:{service.port}"
    for token, status in [
        (make_sas(host, OWNER_KEY, OWNER_POLICY), 404),
        (make_sas("other.azure-devices-provisioning.net", OWNER_KEY, OWNER_POLICY), 401),
        (make_sas(host, base64.b64encode(secrets.token_bytes(32)).decode(), OWNER_POLICY), 401),
        (make_sas(host, OWNER_KEY, None), 401),
        ("Bearer " + issue_token(SIGNING_KEY, "https://vault.azure.net")[0], 401),
        ("Basic dXNlcjpwYXNz", 401),
    ]:
        answer = service.get(f"/enrollments/{cn()}", params=API, headers={"Authorization": token})
        assert answer.status_code == status, (token, answer.text)


def test_the_store_persists_and_other_processes_see_changes(tmp_path, ca):
    device = cn()
    writer = EnrollmentStore(tmp_path)
    reader = EnrollmentStore(tmp_path)
    assert reader.get(device) is None
    writer.put(device, lambda current: {"record": {"registrationId": device, "etag": '"1"'}, "certificates": {}},
               None)
    assert reader.get(device.upper())["record"]["registrationId"] == device
    assert json.loads(store_path(tmp_path).read_text())["schema"] == 1
    assert oct(store_path(tmp_path).stat().st_mode & 0o777) == "0o600"
    writer.delete(device, '"1"')
    assert reader.get(device) is None and EnrollmentStore(tmp_path).entries() == []


def test_the_enrollments_listing(service, dps_state, ca, capsys):
    device = cn()
    cert = ca.issue(device)
    service.put(f"/enrollments/{device}", params=API, json=enrollment(device, cert))
    rows = {r["registrationId"]: r for r in enrollment_rows(dps_state)}
    row = rows[device]
    assert row["provisioningStatus"] == "disabled" and row["serialNumber"] == format(cert.serial_number, "X")
    assert row["sha256Thumbprint"] == cert.fingerprint(hashes.SHA256()).hex().upper()
    assert main(["enrollments", "--state-dir", str(dps_state)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(device))
    assert "disabled" in line and format(cert.serial_number, "X") in line
    assert out.splitlines()[0].split()[:3] == ["REGISTRATION", "ID", "STATUS"]
    assert re.search(r"\d+ individual enrollment\(s\), \d+ disabled", out)
    assert main(["enrollments", "--state-dir", str(dps_state), "--json"]) == 0
    assert device in {r["registrationId"] for r in json.loads(capsys.readouterr().out)}
    assert format_rows([]).endswith("0 individual enrollment(s), 0 disabled")


def test_the_stack_connection_string_uses_the_stack_secret(tmp_path):
    conn = stack_connection_string(tmp_path, 9999)
    assert conn.startswith(f"HostName=localhost:9999;SharedAccessKeyName={OWNER_POLICY};SharedAccessKey=")
    assert conn == stack_connection_string(tmp_path, 9999)
