"""POST /api/certificates/revoke, bulk forms and the superseded rule: bodies, status codes, one CRL per CA, over
real SQL (SQLite ODBC) and real CRL signing (Key Vault faked by a local key)."""

from __future__ import annotations

import datetime as dt

import pytest

from cert_lifecycle import records as records_module
from cert_lifecycle import revocation
from shared import certificates as register_module
from tests.contract.test_cert_http_contract import csr, lifecycle, revoke, sign  # noqa: F401 - lifecycle: fixture

WEST, CENTRAL = "intermediate-ca-west", "intermediate-ca-central"


def issue(cn: str) -> dict:
    status, body = sign(csr(cn))
    assert status == 200, body
    return body


def crl_serials(lc, ca: str) -> set[str]:
    crl = lc.publisher.current(lc.cas.by_name(ca))[0]
    return {format(n, "X") for n in crl.serials}


def crl_issues(lc) -> list[str]:
    rows = lc.db.fetch_all("SELECT details FROM certificate_events WHERE action = 'crl_published'")
    return [row["details"].split('"ca": "')[1].split('"')[0] for row in rows]


def add_record(lc, device_id: str, serial: str, status: str = "active", issuer_ca: str = WEST) -> None:
    subject = lc.cas.by_name(issuer_ca).subject
    now = dt.datetime(2026, 11, 30)
    lc.db.execute("INSERT INTO certificates (issuer, serial_number, device_id, not_before, not_after, status) "
                  "VALUES (?, ?, ?, ?, ?, ?)", [subject, serial, device_id, now, now + dt.timedelta(days=700), status])


def statuses(lc) -> dict[str, str]:
    return {r["serial_number"]: r["status"] for r in lc.db.fetch_all("SELECT serial_number, status FROM certificates")}


# -- serial lists ----------------------------------------------------------------------------------------------
def test_a_serial_list_across_two_cas_issues_one_crl_per_ca(lifecycle):  # noqa: F811
    west = [issue(f"sensor-temp-FAC03-W{n}")["serialNumber"] for n in range(3)]
    central = [issue(f"sensor-vib-FAC07-C{n}")["serialNumber"] for n in range(2)]
    status, body = revoke({"serialNumbers": [*west, *central], "reason": "keyCompromise", "revokedBy": "soc"})
    assert status == 200, body
    assert body["summary"] == {"certificates": 5, "newlyRevoked": 5, "unchanged": 0,
                               "byCa": {CENTRAL: 2, WEST: 3}}
    assert sorted(crl_issues(lifecycle)) == [CENTRAL, WEST]  # one CRL each, not one per certificate
    assert set(west) <= crl_serials(lifecycle, WEST) and set(central) <= crl_serials(lifecycle, CENTRAL)
    assert set(body["crlNumbers"]) == {WEST, CENTRAL} and body["unpublished"] == {}
    assert len(lifecycle.alerts) == 5


def test_a_bulk_call_again_changes_nothing_and_counts_already_revoked_serials_as_unchanged(lifecycle):  # noqa: F811
    serials = [issue(f"sensor-temp-FAC03-R{n}")["serialNumber"] for n in range(3)]
    revoke({"serialNumbers": serials[:1], "reason": "keyCompromise"})
    status, body = revoke({"serialNumbers": serials, "reason": "keyCompromise"})
    assert status == 200 and body["summary"]["newlyRevoked"] == 2 and body["summary"]["unchanged"] == 1
    status, again = revoke({"serialNumbers": serials, "reason": "keyCompromise"})
    assert status == 200 and again["changed"] is False and again["summary"]["unchanged"] == 3
    assert len(lifecycle.alerts) == 3


def test_serials_not_on_record_need_the_issuer(lifecycle):  # noqa: F811
    known = issue("sensor-temp-FAC03-K1")["serialNumber"]
    status, body = revoke({"serialNumbers": [known, "ABCDEF"], "reason": "keyCompromise"})
    assert (status, body["error"]["code"]) == (400, "invalid_request") and "ABCDEF" in body["error"]["detail"]
    assert lifecycle.db.fetch_all("SELECT serial_number FROM revocations") == []  # nothing written
    status, body = revoke({"serialNumbers": [known, "ABCDEF"], "issuer": WEST, "reason": "keyCompromise"})
    assert status == 200 and [e["onRecord"] for e in body["revoked"]] == [True, False]


# -- device lists and facilities -------------------------------------------------------------------------------
def test_a_device_list_revokes_every_active_certificate_of_each_and_names_those_without(lifecycle):  # noqa: F811
    a1 = issue("sensor-temp-FAC03-A")["serialNumber"]
    # a second active certificate, as a renewal has until the old one is superseded (partners get certificate_exists)
    a2 = lifecycle.issuer.issue(csr("sensor-temp-FAC03-A"), actor="renewal").serial_number
    b = issue("sensor-vib-FAC07-B")["serialNumber"]
    other = issue("sensor-temp-FAC03-OTHER")["serialNumber"]
    status, body = revoke({"deviceIds": ["sensor-temp-FAC03-A", "sensor-vib-FAC07-B", "sensor-temp-FAC03-NONE"],
                           "reason": "cessationOfOperation"})
    assert status == 200, body
    assert sorted(e["serialNumber"] for e in body["revoked"]) == sorted([a1, a2, b])
    assert body["notFound"] == ["sensor-temp-FAC03-NONE"] and body["summary"]["byCa"] == {CENTRAL: 1, WEST: 2}
    assert statuses(lifecycle)[other] == "active"
    assert sorted(crl_issues(lifecycle)) == [CENTRAL, WEST]


def test_a_facility_revokes_the_active_certificates_of_exactly_that_facility(lifecycle):  # noqa: F811
    mine = [issue(f"sensor-temp-FAC03-F{n}")["serialNumber"] for n in range(3)]
    add_record(lifecycle, "sensor-temp-FAC030-X1", "F030")  # a facility whose code starts the same
    add_record(lifecycle, "sensor-temp-FAC03-OLD", "0LD", status="superseded")
    elsewhere = issue("sensor-vib-FAC07-F1")["serialNumber"]
    status, body = revoke({"facility": "FAC03", "reason": "affiliationChanged", "revokedBy": "ops"})
    assert status == 200, body
    assert sorted(e["serialNumber"] for e in body["revoked"]) == sorted(mine)
    assert {s: statuses(lifecycle)[s] for s in ("F030", "0LD", elsewhere)} == {
        "F030": "active", "0LD": "superseded", elsewhere: "active"}
    assert crl_issues(lifecycle) == [WEST]


@pytest.mark.parametrize("body,status,code", [
    ({"facility": "FAC77"}, 404, "unknown_facility"),
    ({"facility": "FAC_3"}, 400, "invalid_request"),
    ({"serialNumbers": ["AB"] * 2 + [format(n, "X") for n in range(1, revocation.MAX_LIST + 1)]}, 413,
     "too_many_certificates"),
    ({"serialNumber": "AB", "deviceIds": ["sensor-temp-FAC03-A"]}, 400, "invalid_request"),
])
def test_bulk_refusals_carry_catalogue_codes(lifecycle, body, status, code):  # noqa: F811
    answer_status, answer = revoke(body)
    assert (answer_status, answer["error"]["code"]) == (status, code)


def test_a_selector_matching_more_than_the_cap_is_refused_before_anything_is_written(lifecycle, monkeypatch):  # noqa: F811
    for n in range(3):
        issue(f"sensor-temp-FAC03-CAP{n}")
    monkeypatch.setattr(revocation, "MAX_TARGETS", 2)
    status, body = revoke({"facility": "FAC03", "reason": "keyCompromise"})
    assert (status, body["error"]["code"]) == (413, "too_many_certificates")
    assert "matches 3 certificates" in body["error"]["detail"]
    assert lifecycle.db.fetch_all("SELECT serial_number FROM revocations") == []


# -- superseded: only what this product issued to that device --------------------------------------------------
def test_superseded_is_refused_for_a_serial_not_on_record(lifecycle):  # noqa: F811
    status, body = revoke({"serialNumber": "ABCDEF", "issuer": WEST, "reason": "superseded"})
    assert (status, body["error"]["code"]) == (409, "superseded_not_on_record")
    status, body = revoke({"serialNumbers": ["ABCDEF"], "issuer": WEST, "reason": "superseded"})
    assert (status, body["error"]["code"]) == (409, "superseded_not_on_record")
    assert lifecycle.db.fetch_all("SELECT serial_number FROM revocations") == []


def test_superseded_is_refused_for_another_devices_certificate(lifecycle):  # noqa: F811
    theirs = issue("sensor-temp-FAC03-THEIRS")["serialNumber"]
    status, body = revoke({"serialNumber": theirs, "deviceId": "sensor-temp-FAC03-MINE", "reason": "superseded"})
    assert (status, body["error"]["code"]) == (409, "superseded_not_on_record")
    assert statuses(lifecycle)[theirs] == "active"
    status, body = revoke({"serialNumber": theirs, "deviceId": "sensor-temp-FAC03-THEIRS", "reason": "superseded"})
    assert status == 200 and statuses(lifecycle)[theirs] == "superseded" and lifecycle.alerts == []


# -- SQL in slices, and concurrent revocations -----------------------------------------------------------------
def test_long_lists_go_to_sql_in_slices_with_the_same_outcome(lifecycle, monkeypatch):  # noqa: F811
    monkeypatch.setattr(register_module, "IN_CHUNK", 2)
    monkeypatch.setattr(records_module, "INSERT_ROWS", 2)
    devices = [f"sensor-temp-FAC03-S{n}" for n in range(5)]
    serials = [issue(device)["serialNumber"] for device in devices]
    status, body = revoke({"deviceIds": devices, "reason": "keyCompromise"})
    assert status == 200 and sorted(e["serialNumber"] for e in body["revoked"]) == sorted(serials)
    assert set(statuses(lifecycle).values()) == {"revoked"} and revocations(lifecycle) == sorted(serials)


def test_a_bulk_insert_that_meets_a_concurrent_revocation_falls_back_row_by_row(lifecycle, monkeypatch):  # noqa: F811
    records, subject = lifecycle.records, lifecycle.cas.by_name(WEST).subject
    at = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    records.add_revocation(subject, "B", "keyCompromise", at, "someone else")
    looked_up = records.revocations_of
    calls = []

    def stale_first_look(issuer, serials):  # the other writer's row lands between the look and the INSERT
        calls.append(list(serials))
        return {} if len(calls) == 1 else looked_up(issuer, serials)

    monkeypatch.setattr(records, "revocations_of", stale_first_look)
    inserted, existing = records.add_revocations(subject, ["A", "B", "C"], "unspecified", at, "me")
    assert inserted == {"A", "C"} and existing["B"].reason == "keyCompromise"
    assert revocations(lifecycle) == ["A", "B", "C"]


def revocations(lc) -> list[str]:
    return sorted(r["serial_number"] for r in lc.db.fetch_all("SELECT serial_number FROM revocations"))
