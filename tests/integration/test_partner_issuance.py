"""Issuance for manufacturing partners over HTTP against the whole local stack (docs/partners.md): the function key
alone is refused, a partner is its own identity (a bearer token the stack issues, validated as Entra's would be),
its scope and daily quota hold, one active certificate per device until an operator re-issues through the CLI."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from local.partners import partner_authorization
from local.secrets import stack_secret
from tests.stack_helpers import BASE_URL, http, new_partner, stack_values

SIGN = "/api/certificates/sign"


@pytest.fixture(scope="module")
def function_key(stack):
    return stack_secret(stack.state_dir, "function-key-default")


def csr(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM))


def cn(type_code: str = "temp", facility: str = "FAC05", prefix: str = "SN") -> str:
    return f"sensor-{type_code}-{facility}-{prefix}{secrets.randbelow(10**8):08d}"


def sign(function_key: str | None, authorization: str | None, device_id: str) -> tuple[int, dict, dict]:
    headers = {"x-functions-key": function_key} if function_key else {}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(BASE_URL + SIGN, data=csr(device_id), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read()), {k.lower(): v for k, v in answer.headers.items()}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else {}, {k.lower(): v for k, v in exc.headers.items()}


def cli(stack, *args: str) -> tuple[int, dict | str]:
    run = subprocess.run([sys.executable, "-m", "cli", "--settings", str(stack.settings_path), "--json", *args],
                         capture_output=True, text=True, timeout=120, check=False)
    try:
        return run.returncode, json.loads(run.stdout)
    except ValueError:
        return run.returncode, run.stdout + run.stderr


def code(body: dict) -> str:
    return body.get("error", {}).get("code", "")


def test_the_function_key_alone_is_refused(stack, function_key):
    _, authorization = new_partner("key-only check")
    status, body, headers = sign(function_key, None, cn())
    assert (status, code(body)) == (401, "partner_credential_required") and headers["www-authenticate"] == "Bearer"
    assert sign(function_key, "Bearer not.a.token", cn())[:2][0] == 401
    forged = authorization[:-6] + ("AAAAAA" if not authorization.endswith("AAAAAA") else "BBBBBB")
    status, body, _ = sign(function_key, forged, cn())
    assert (status, code(body)) == (401, "partner_credential_invalid")
    assert sign(None, authorization, cn())[0] == 401  # and the partner token alone is no function key
    assert sign(function_key, authorization, cn())[0] == 200


def test_a_token_without_the_role_or_of_a_disabled_partner_is_refused(stack, function_key):
    partner_id, authorization = new_partner("role check")
    no_role = partner_authorization(stack_values(), partner_id, roles=[])
    status, body, _ = sign(function_key, no_role, cn())
    assert (status, code(body)) == (403, "partner_not_authorized")
    unknown = partner_authorization(stack_values(), "00000000-0000-0000-0000-000000000bad")
    assert code(sign(function_key, unknown, cn())[1]) == "partner_not_authorized"
    assert cli(stack, "partners", "disable", partner_id)[0] == 0
    status, body, _ = sign(function_key, authorization, cn())
    assert (status, code(body)) == (403, "partner_not_authorized")


def test_a_partner_created_with_the_cli_signs_and_is_recorded(stack, services, function_key):
    status, created = cli(stack, "partners", "create", "Acme Sensors", "--facility", "FAC05", "--facility", "FAC06")
    assert status == 0, created
    assert created["facilities"] == ["FAC05", "FAC06"] and created["authorization"].startswith("Bearer ")
    device = cn(facility="FAC06")
    status, body, _ = sign(function_key, created["authorization"], device)
    assert status == 200, body
    row = services.database.fetch_one("SELECT partner_id FROM certificates WHERE serial_number = ?",
                                      [body["serialNumber"]])
    assert row["partner_id"] == created["partnerId"]
    event = services.database.fetch_one("SELECT actor FROM certificate_events WHERE action = 'issued' AND "
                                        "serial_number = ?", [body["serialNumber"]])
    assert event["actor"] == f"partner:{created['partnerId']}"
    status, listed = cli(stack, "partners", "list")
    assert any(p["partnerId"] == created["partnerId"] and p["usedToday"] == 1 for p in listed["partners"])


def test_a_second_csr_is_refused_until_an_operator_reissues_and_supersedes(stack, services, function_key):
    _, authorization = new_partner("reissue check")
    device = cn()
    status, first, _ = sign(function_key, authorization, device)
    assert status == 200, first
    status, body, _ = sign(function_key, authorization, device)
    assert (status, code(body)) == (409, "certificate_exists")
    status, out = cli(stack, "certs", "reissue", device)  # the reason is required
    assert status == 2, out
    status, out = cli(stack, "certs", "reissue", device, "--reason", "lost_secure_element")
    assert status == 0, out
    assert out["superseded"] == [first["serialNumber"]]
    old = services.database.fetch_one("SELECT status FROM certificates WHERE serial_number = ?",
                                      [first["serialNumber"]])
    assert old["status"] == "superseded"
    revocation = services.database.fetch_one("SELECT reason, revoked_by FROM revocations WHERE serial_number = ?",
                                             [first["serialNumber"]])
    assert revocation["reason"] == "superseded" and "lost_secure_element" in revocation["revoked_by"]
    status, second, _ = sign(function_key, authorization, device)
    assert status == 200, second
    assert second["serialNumber"] != first["serialNumber"]
    assert code(sign(function_key, authorization, device)[1]) == "certificate_exists"


def test_a_partner_outside_its_scope_is_refused(stack, function_key):
    _, authorization = new_partner("scoped", facilities=["FAC05"], sensor_types=["temp"], serial_prefix="AC")
    assert sign(function_key, authorization, cn(facility="FAC05", prefix="AC"))[0] == 200
    for device, expected in [(cn(facility="FAC07", prefix="AC"), "facility_not_allowed"),
                             (cn("press", "FAC05", prefix="AC"), "sensor_type_not_allowed"),
                             (cn(facility="FAC05", prefix="ZZ"), "serial_not_allowed")]:
        status, body, _ = sign(function_key, authorization, device)
        assert (status, code(body)) == (403, expected), (device, body)


def test_the_daily_quota_answers_429_with_retry_after(stack, function_key):
    _, authorization = new_partner("quota", daily_quota=2)
    assert [sign(function_key, authorization, cn())[0] for _ in range(2)] == [200, 200]
    status, body, headers = sign(function_key, authorization, cn())
    assert (status, code(body)) == (429, "partner_quota_exceeded")
    assert 1 <= int(headers["retry-after"]) <= 86400
    # a refusal for another reason takes no unit: the count stays at the quota, not above it
    assert sign(function_key, authorization, "sensor-temp-FAC99-SN1")[0] == 404


def test_a_batch_returns_per_item_results_records_its_lot_and_the_lot_status_lists_it(stack, services, function_key):
    partner_id, authorization = new_partner("batch", facilities=["FAC05", "FAC06"], daily_quota=3)
    lot = f"LOT-{secrets.token_hex(4).upper()}"
    devices = [cn(facility="FAC05"), cn(facility="FAC06"), cn(facility="FAC09"), cn(facility="FAC05"),
               cn(facility="FAC06")]
    body = {"lot": lot, "csrs": [{"csr": csr(d).decode()} for d in [*devices[:2], devices[0], *devices[2:]]]}
    partner = {"Authorization": authorization}
    assert http("POST", "/api/certificates/batch", body, key=function_key)[0] == 401  # the key alone
    status, answer = http("POST", "/api/certificates/batch", body, key=function_key, headers=partner)
    assert status == 200, answer
    assert [r.get("error", {}).get("code", r["status"]) for r in answer["results"]] == [
        200, 200, "certificate_exists", "facility_not_allowed", 200, "partner_quota_exceeded"]
    assert answer["summary"]["issued"] == 3 and answer["summary"]["refused"] == 3
    issued = {r["serialNumber"]: r["deviceId"] for r in answer["results"] if r["status"] == 200}
    rows = services.database.fetch_all("SELECT serial_number, lot, partner_id FROM certificates WHERE lot = ?", [lot])
    assert {r["serial_number"] for r in rows} == set(issued) and {r["partner_id"] for r in rows} == {partner_id}

    status, listed = http("GET", f"/api/certificates/lots/{lot}", key=function_key, headers=partner)
    assert status == 200, listed
    assert {c["serialNumber"]: c["deviceId"] for c in listed["certificates"]} == issued
    assert listed["summary"] == {"certificates": 3, "active": 3, "revoked": 0, "superseded": 0}
    _, stranger = new_partner("stranger")
    status, hidden = http("GET", f"/api/certificates/lots/{lot}", key=function_key,
                          headers={"Authorization": stranger})
    assert (status, code(hidden)) == (404, "lot_not_found")

    status, dry = cli(stack, "certs", "revoke", "--lot", lot)  # a dry run first, as every selector
    assert status == 2 and dry["certificates"] == 3, dry
    status, revoked = cli(stack, "certs", "revoke", "--lot", lot, "--reason", "keyCompromise", "--yes")
    assert status == 0, revoked
    assert {r["serialNumber"] for r in revoked["revoked"]} == set(issued)
    status, listed = http("GET", f"/api/certificates/lots/{lot}", key=function_key, headers=partner)
    assert listed["summary"]["revoked"] == 3


def test_the_openapi_document_is_served_anonymously(stack):
    from cert_lifecycle.openapi import document

    status, served = http("GET", "/api/partner-api/openapi.json")
    assert status == 200 and served == document()
