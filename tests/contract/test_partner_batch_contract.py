"""Batch issuance, the status of a lot and the revocation of a lot over HTTP, called as the worker calls the
functions, over real SQL (SQLite ODBC) with Key Vault faked (the lifecycle fixture of test_cert_http_contract): one
result per CSR in the order sent, the quota taken per issued certificate, the lot recorded and read back, the
partner's own lots only; every refusal met here is one the OpenAPI document lists for that operation."""

from __future__ import annotations

import json
from types import SimpleNamespace

import azure.functions as func
import pytest

from cert_lifecycle import functions
from cert_lifecycle.batch import MAX_BATCH, MAX_BATCH_BYTES
from cert_lifecycle.openapi import document
from tests.contract.test_cert_http_contract import csr, lifecycle, revoke  # noqa: F401 - lifecycle: fixture
from tests.unit.test_partner_openapi import documented_codes, operations

LOT = "LOT-2026-11-30-A"


def documented(operation_id: str, status: int, code: str) -> bool:
    found = {op["operationId"]: op for op in operations(document()).values()}[operation_id]
    return code in documented_codes(found).get(str(status), [])


def batch(body: dict | bytes) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = functions.sign_csr_batch.build().get_user_function()(
        func.HttpRequest("POST", "/api/certificates/batch", body=data, headers={"Authorization": "Bearer t"}))
    answer = json.loads(response.get_body())
    if response.status_code != 200:
        assert documented("sign_csr_batch", response.status_code, answer["error"]["code"]), answer
    return response.status_code, answer, dict(response.headers)


def lot(name: str) -> tuple[int, dict]:
    response = functions.certificate_lot.build().get_user_function()(
        func.HttpRequest("GET", f"/api/certificates/lots/{name}", body=b"", headers={}, route_params={"lot": name}))
    answer = json.loads(response.get_body())
    if response.status_code != 200:
        assert documented("certificate_lot", response.status_code, answer["error"]["code"]), answer
    return response.status_code, answer


def entries(*cns: str) -> list[dict]:
    return [{"csr": csr(cn).decode()} for cn in cns]


def item_codes(body: dict) -> list:
    return [r.get("error", {}).get("code", r["status"]) for r in body["results"]]


def test_a_batch_answers_every_csr_in_order_and_records_the_lot(lifecycle):  # noqa: F811
    csrs = entries("sensor-temp-FAC03-B1", "sensor-temp-FAC03-B2", "sensor-temp-FAC03-B1", "sensor-temp-FAC99-B3")
    csrs.insert(3, {"csr": "garbage"})
    csrs.append({"pem": "x"})
    status, body, _ = batch({"lot": LOT, "csrs": csrs})
    assert status == 200, body
    assert item_codes(body) == [200, 200, "certificate_exists", "csr_invalid", "unknown_facility", "invalid_request"]
    assert [r["index"] for r in body["results"]] == list(range(6))
    assert [r["status"] for r in body["results"]] == [200, 200, 409, 400, 404, 400]
    assert body["results"][2]["deviceId"] == "sensor-temp-FAC03-B1"  # which sensor a refusal was for
    assert body["summary"] == {"csrs": 6, "issued": 2, "refused": 4, "notAttempted": 0,
                               "byCode": {"certificate_exists": 1, "csr_invalid": 1, "invalid_request": 1,
                                          "unknown_facility": 1}}
    issued = body["results"][0]
    assert issued["chain"] == issued["certificate"] + issued["caCertificates"][0]
    rows = lifecycle.db.fetch_all("SELECT serial_number, lot, partner_id, issued_at FROM certificates")
    assert {r["lot"] for r in rows} == {LOT} and len(rows) == 2 and all(r["issued_at"] for r in rows)
    for result in body["results"][2:]:
        code = result["error"]["code"]
        item_enum = document()["components"]["schemas"]["BatchItemRefused"]["allOf"][2]
        assert code in item_enum["properties"]["error"]["properties"]["code"]["enum"]


def test_the_quota_is_taken_per_issued_certificate(lifecycle):  # noqa: F811
    partner = lifecycle.partners.create("small", daily_quota=2)
    lifecycle.partner_auth = SimpleNamespace(partner=lambda authorization: partner)
    status, body, headers = batch({"lot": "L1", "csrs": entries("sensor-temp-FAC03-Q0", "sensor-temp-FAC99-Q1",
                                                                "sensor-temp-FAC03-Q2", "sensor-temp-FAC03-Q3")})
    assert status == 200
    assert item_codes(body) == [200, "unknown_facility", 200, "partner_quota_exceeded"]
    assert body["results"][3]["status"] == 429 and 1 <= int(headers["Retry-After"]) <= 86400
    assert lifecycle.partners.get(partner.partner_id).quota_used == 2


def test_a_fault_stops_the_batch_and_the_rest_is_not_attempted(lifecycle):  # noqa: F811
    def down(algorithm, digest):
        raise ConnectionError("vault unreachable")

    lifecycle.vault["https://vault/keys/intermediate-ca-central/1"] = down
    status, body, _ = batch({"lot": LOT, "csrs": entries("sensor-temp-FAC03-F1", "sensor-vib-FAC07-F2",
                                                         "sensor-temp-FAC03-F3", "sensor-temp-FAC03-F4")})
    assert status == 200
    assert item_codes(body) == [200, "dependency_unavailable", "not_attempted", "not_attempted"]
    assert body["summary"]["notAttempted"] == 2 and body["results"][2]["status"] == 503
    assert lifecycle.partners.get(lifecycle.partners.all()[0].partner_id).quota_used == 1  # the failed one given back


@pytest.mark.parametrize("body,status,code", [
    ({"lot": LOT, "csrs": [{"csr": "x"}] * (MAX_BATCH + 1)}, 413, "batch_too_large"),
    (b"{" + b" " * MAX_BATCH_BYTES + b"}", 413, "request_too_large"),
    ({"lot": "bad lot/../x", "csrs": [{"csr": "x"}]}, 400, "invalid_lot"),
    ({"lot": "L" * 65, "csrs": [{"csr": "x"}]}, 400, "invalid_lot"),
    ({"csrs": [{"csr": "x"}]}, 400, "invalid_lot"),
    ({"lot": LOT, "csrs": []}, 400, "invalid_request"),
    ({"lot": LOT, "csrs": [{"csr": "x"}], "extra": 1}, 400, "invalid_request"),
    (b"[1]", 400, "invalid_request"),
])
def test_refusals_of_the_whole_batch(lifecycle, body, status, code):  # noqa: F811
    answer_status, answer, _ = batch(body)
    assert (answer_status, answer["error"]["code"]) == (status, code)
    assert lifecycle.db.fetch_all("SELECT serial_number FROM certificates") == []


def test_without_a_partner_credential_nothing_is_read(lifecycle):  # noqa: F811
    from cert_lifecycle.partners import PartnerAuthenticator, TokenSettings

    lifecycle.partner_auth = PartnerAuthenticator(TokenSettings("iss", "aud", "http://keys"), lifecycle.partners)
    status, answer, _ = batch({"lot": LOT, "csrs": entries("sensor-temp-FAC03-N1")})
    assert (status, answer["error"]["code"]) == (401, "partner_credential_invalid")  # "Bearer t" is no token
    assert lot(LOT)[1]["error"]["code"] == "partner_credential_required"  # no Authorization header at all
    assert lifecycle.db.fetch_all("SELECT serial_number FROM certificates") == []


def test_the_status_of_a_lot_lists_the_partners_own_certificates(lifecycle):  # noqa: F811
    _, body, _ = batch({"lot": LOT, "csrs": entries("sensor-temp-FAC03-S1", "sensor-vib-FAC07-S2")})
    status, answer = lot(LOT)
    assert status == 200, answer
    assert answer["summary"] == {"certificates": 2, "active": 2, "revoked": 0, "superseded": 0}
    assert [c["deviceId"] for c in answer["certificates"]] == ["sensor-temp-FAC03-S1", "sensor-vib-FAC07-S2"]
    assert [c["serialNumber"] for c in answer["certificates"]] == [r["serialNumber"] for r in body["results"]]
    assert all(c["status"] == "active" and c["issuedAt"].endswith("Z") for c in answer["certificates"])
    assert lot("LOT-UNKNOWN")[1]["error"]["code"] == "lot_not_found"
    assert lot("bad lot")[0] == 400
    # another partner's lot of the same name is neither shown nor counted
    other = lifecycle.partners.create("other", daily_quota=10)
    lifecycle.partner_auth = SimpleNamespace(partner=lambda authorization: other)
    assert lot(LOT)[:1] == (404,)
    batch({"lot": LOT, "csrs": entries("sensor-temp-FAC03-S3")})
    assert lot(LOT)[1]["summary"]["certificates"] == 1


def test_a_lot_is_revoked_by_its_name(lifecycle):  # noqa: F811
    _, body, _ = batch({"lot": LOT, "csrs": entries("sensor-temp-FAC03-R1", "sensor-vib-FAC07-R2")})
    batch({"lot": "LOT-OTHER", "csrs": entries("sensor-temp-FAC03-R3")})
    status, answer = revoke({"lot": LOT, "reason": "keyCompromise", "revokedBy": "qa@example.com"})
    assert status == 200, answer
    assert sorted(r["serialNumber"] for r in answer["revoked"]) == sorted(r["serialNumber"] for r in body["results"])
    assert answer["crlNumbers"].keys() == {"intermediate-ca-west", "intermediate-ca-central"}
    assert lot(LOT)[1]["summary"] == {"certificates": 2, "active": 0, "revoked": 2, "superseded": 0}
    assert lot("LOT-OTHER")[1]["summary"]["active"] == 1
    assert revoke({"lot": LOT})[1]["revoked"] == []  # nothing active is left in it
    assert revoke({"lot": "LOT-NEVER"})[1]["error"]["code"] == "lot_not_found"
    assert revoke({"lot": "no/such"})[1]["error"]["code"] == "invalid_lot"
    assert revoke({"lot": LOT, "serialNumber": "AB"})[1]["error"]["code"] == "invalid_request"
