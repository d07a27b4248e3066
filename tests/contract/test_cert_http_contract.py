"""The HTTP contract of sign_csr and revoke_certificate: status codes and bodies, called as the worker calls them,
over real SQL (SQLite ODBC) with Key Vault faked by a local key."""

from __future__ import annotations

import json
from types import SimpleNamespace

import azure.functions as func
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cert_lifecycle import functions
from cert_lifecycle import wiring as lifecycle_wiring
from cert_lifecycle.authority import CaDirectory, CertificateIssuer
from cert_lifecycle.crl import CrlPublisher
from cert_lifecycle.partners import PartnerDirectory
from cert_lifecycle.records import CertificateRecords
from cert_lifecycle.revocation import MAX_BODY_BYTES, Revoker
from cert_lifecycle.settings import LifecycleSettings
from local.seed.seed import SCHEMA, schema_statements
from shared.audit import AuditWriter
from shared.config import RegionalCa
from shared.sql import Database
from tests.pki_helpers import make_ca
from tests.unit.test_cert_crl import local_vault_sign
from tests.unit.test_crl_store import MemoryBlobStore


class FakeCertificates:
    def __init__(self, cas):
        self.cas = cas

    def get_certificate(self, name):
        return SimpleNamespace(cer=self.cas[name].certificate.public_bytes(serialization.Encoding.DER),
                               key_id=f"https://vault/keys/{name}/1")


@pytest.fixture
def lifecycle(tmp_path, monkeypatch):
    db = Database(f"Driver=SQLite3;Database={tmp_path / 'contract.db'}")
    for statement in schema_statements(SCHEMA.read_text()):
        db.execute(statement)
    for code, region, active in [("FAC03", "west", 1), ("FAC07", "central", 1), ("FAC12", "east", 0)]:
        db.execute("INSERT INTO facilities (facility_code, name, region, preferred_hub, manager_email, active) "
                   "VALUES (?, ?, ?, 'hub', 'm@example.com', ?)", [code, code, region, active])
    cas = {"intermediate-ca-west": make_ca("intermediate-ca-west", "west"),
           "intermediate-ca-central": make_ca("intermediate-ca-central", "central"),
           "intermediate-ca-east": make_ca("intermediate-ca-east", "east")}
    vault = {f"https://vault/keys/{n}/1": local_vault_sign(ca.key) for n, ca in cas.items()}  # what Key Vault does
    signers = {kid: (lambda algorithm, digest, kid=kid: vault[kid](algorithm, digest)) for kid in vault}
    settings = LifecycleSettings()
    records, audit = CertificateRecords(db), AuditWriter(db)
    regional = [RegionalCa(name.rsplit("-", 1)[1], name) for name in cas]
    directory = CaDirectory(regional, FakeCertificates(cas), signers.__getitem__)
    alerts: list[dict] = []
    lc = SimpleNamespace(settings=settings, audit=audit, records=records, cas=directory, db=db, alerts=alerts,
                         vault=vault)
    lc.partners = PartnerDirectory(db)
    partner = lc.partners.create("contract partner", daily_quota=1000)
    lc.partner_auth = SimpleNamespace(partner=lambda authorization: partner)  # tokens: tests/unit/test_partners.py
    lc.issuer = CertificateIssuer(directory, records, audit, settings, partners=lc.partners)
    lc.publisher = CrlPublisher(MemoryBlobStore(), records, audit, settings)
    lc.revoker = Revoker(directory, records, lc.publisher, audit, alerts.append, None, [])
    monkeypatch.setattr(lifecycle_wiring, "lifecycle", lambda: lc)
    yield lc
    db.close()


def csr(cn="sensor-temp-FAC03-SN482019") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def call(function, route: str, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = function.build().get_user_function()(func.HttpRequest("POST", f"/api/{route}", body=data, headers={}))
    return response.status_code, json.loads(response.get_body())


def sign(body):
    return call(functions.sign_csr, "certificates/sign", body)


def revoke(body):
    return call(functions.revoke_certificate, "certificates/revoke", body)


def test_sign_answers_certificate_chain_and_records_it(lifecycle):
    status, body = sign(csr())
    assert status == 200, body
    assert set(body) == {"deviceId", "serialNumber", "issuer", "issuerDn", "notBefore", "notAfter", "certificate",
                         "caCertificates", "chain"}
    assert body["chain"] == body["certificate"] + body["caCertificates"][0]
    assert body["notAfter"].endswith("Z") and body["issuer"] == "intermediate-ca-west"
    assert lifecycle.records.certificates_with_serial(body["serialNumber"])[0].status == "active"
    status, central = sign({"csr": csr("sensor-vib-FAC07-A1").decode()})
    assert (status, central["issuer"]) == (200, "intermediate-ca-central")
    actions = [r["action"] for r in lifecycle.db.fetch_all("SELECT action FROM certificate_events")]
    assert actions == ["issued", "issued"]


@pytest.mark.parametrize("body,status,code", [
    (b"A" * (1024 * 1024), 413, "request_too_large"),
    ({"pem": "x"}, 400, "invalid_request"),
    (b"{not json", 400, "invalid_request"),
    (b"garbage", 400, "csr_invalid"),
    (csr("sensor-temp-FAC99-SN1"), 404, "unknown_facility"),
    (csr("sensor-temp-FAC12-SN1"), 403, "facility_inactive"),
])
def test_sign_refusals_carry_catalogue_codes(lifecycle, body, status, code):
    answer_status, answer = sign(body)
    assert (answer_status, answer["error"]["code"]) == (status, code)
    assert set(answer["error"]) <= {"code", "message", "detail"}
    assert lifecycle.db.fetch_all("SELECT serial_number FROM certificates") == []


def test_a_bad_vault_signature_or_a_vault_outage_issues_nothing(lifecycle):
    other = ec.generate_private_key(ec.SECP256R1())
    lifecycle.vault["https://vault/keys/intermediate-ca-west/1"] = local_vault_sign(other)
    assert sign(csr())[1]["error"]["code"] == "signing_failed"

    def down(algorithm, digest):
        raise ConnectionError("vault unreachable")

    lifecycle.vault["https://vault/keys/intermediate-ca-west/1"] = down
    status, body = sign(csr())
    assert (status, body["error"]["code"]) == (503, "dependency_unavailable")
    assert lifecycle.db.fetch_all("SELECT serial_number FROM certificates") == []


def test_revoke_then_revoke_again_is_a_no_op(lifecycle):
    issued = sign(csr())[1]
    request = {"serialNumber": issued["serialNumber"], "reason": "keyCompromise", "revokedBy": "soc@example.com"}
    status, first = revoke(request)  # issuer looked up in the asset register
    assert status == 200 and first["changed"] is True
    assert first["revoked"][0]["deviceId"] == "sensor-temp-FAC03-SN482019"
    status, second = revoke({**request, "issuer": "intermediate-ca-west"})
    assert status == 200 and second["changed"] is False and second["crlNumbers"] == first["crlNumbers"]
    assert [a["serialNumber"] for a in lifecycle.alerts] == [issued["serialNumber"]]
    by_device = revoke({"deviceId": "sensor-temp-FAC03-SN482019", "reason": "keyCompromise"})
    assert by_device[0] == 404 and by_device[1]["error"]["code"] == "certificate_not_found"


@pytest.mark.parametrize("body,status,code", [
    ({"serialNumber": "AB", "issuer": "intermediate-ca-west", "reason": "cACompromise"}, 400,
     "invalid_revocation_reason"),
    ({"serialNumber": "not-hex", "issuer": "intermediate-ca-west"}, 400, "invalid_serial_number"),
    ({"serialNumber": "AB" * 21, "issuer": "intermediate-ca-west"}, 400, "invalid_serial_number"),
    ({"reason": "keyCompromise"}, 400, "invalid_request"),
    ({"serialNumber": "AB", "issuer": "intermediate-ca-mars"}, 404, "unknown_ca"),
    ({"serialNumber": "AB", "issuer": "CN=Someone Else"}, 404, "unknown_ca"),
    ({"serialNumber": "AB"}, 400, "invalid_request"),
    ({"deviceId": "sensor-temp-FAC03-NOBODY", "reason": "keyCompromise"}, 404, "certificate_not_found"),
    ({"serialNumber": "AB", "issuer": "intermediate-ca-west", "revokedBy": "x" * 200}, 400, "invalid_request"),
    (b"[1, 2]", 400, "invalid_request"),
    (b"x" * (MAX_BODY_BYTES + 1), 413, "request_too_large"),
])
def test_revoke_refusals_carry_catalogue_codes(lifecycle, body, status, code):
    answer_status, answer = revoke(body)
    assert (answer_status, answer["error"]["code"]) == (status, code)


def test_a_revocation_whose_crl_cannot_be_published_is_kept_answered_503_and_published_by_the_refresh(lifecycle):
    issued = sign(csr())[1]
    store = lifecycle.publisher._store
    original = store.write

    def storage_down(*args, **kwargs):
        raise ConnectionError("Blob Storage unreachable")

    store.write = storage_down
    request = {"serialNumber": issued["serialNumber"], "reason": "keyCompromise"}
    status, body = revoke(request)
    assert (status, body["error"]["code"]) == (503, "revocation_not_published")
    assert body["unpublished"] == {"intermediate-ca-west": "dependency_unavailable"}
    assert body["revoked"][0]["serialNumber"] == issued["serialNumber"] and body["changed"] is True
    kept = lifecycle.db.fetch_one("SELECT reason FROM revocations WHERE serial_number = ?", [issued["serialNumber"]])
    assert kept == {"reason": "keyCompromise"}
    assert [(a["serialNumber"], a["crlPublished"]) for a in lifecycle.alerts] == [(issued["serialNumber"], False)]

    store.write = original
    functions.refresh_crls.build().get_user_function()(None)  # the timer: SQL has a revocation the CRL lacks
    crl = lifecycle.publisher.current(lifecycle.cas.by_name("intermediate-ca-west"))[0]
    assert int(issued["serialNumber"], 16) in crl.serials
    status, retried = revoke(request)
    assert status == 200 and retried["changed"] is False and retried["unpublished"] == {}
    assert len(lifecycle.alerts) == 1  # announced once, when it was recorded


def test_a_crl_that_cannot_be_signed_is_a_503_too_never_a_500(lifecycle):
    issued = sign(csr())[1]
    lifecycle.vault["https://vault/keys/intermediate-ca-west/1"] = lambda algorithm, digest: b"\0" * 64
    status, body = revoke({"serialNumber": issued["serialNumber"], "reason": "privilegeWithdrawn"})
    assert (status, body["error"]["code"]) == (503, "revocation_not_published")
    assert body["unpublished"] == {"intermediate-ca-west": "signing_failed"}


def test_a_revocation_for_cause_pins_the_issued_certificate_in_a_disabled_dps_enrollment(lifecycle, tls, tmp_path):
    """sign_csr keeps the certificate in the register (migration 0002); revoke_certificate for cause hands exactly
    that certificate to the DPS service API (here the local emulator over TLS, with the stack identity's tokens), as
    a disabled individual enrollment; superseded leaves DPS alone."""
    import base64
    import secrets

    from local.dps.service import OWNER_POLICY, create_app
    from local.dps.store import EnrollmentStore
    from local.serve import free_port, serve_in_thread
    from shared.dps import DpsEnrollments
    from shared.retry import RetryPolicy
    from tests.unit.test_dps_adapter import LocalIdentity

    key = secrets.token_bytes(32)
    port = free_port()
    app = create_app(tmp_path, key, f"localhost:{port}", {OWNER_POLICY: base64.b64encode(b"k" * 32).decode()})
    server = serve_in_thread(app, port, tls)
    adapter = DpsEnrollments(f"localhost:{port}", LocalIdentity(key),
                             policy=RetryPolicy(attempts=2, base_s=0.01, budget_s=5))
    try:
        lifecycle.revoker = Revoker(lifecycle.cas, lifecycle.records, lifecycle.publisher, lifecycle.audit,
                                    lifecycle.alerts.append, None, [], dps=lambda: adapter)
        issued = sign(csr("sensor-temp-FAC03-SN000777"))[1]
        west = lifecycle.cas.by_name("intermediate-ca-west").subject
        assert lifecycle.records.certificate_pems(west, [issued["serialNumber"]]) == {
            issued["serialNumber"]: issued["certificate"]}

        status, body = revoke({"deviceId": "sensor-temp-FAC03-SN000777", "reason": "keyCompromise"})
        assert status == 200 and body["disallowedAtDps"] == ["sensor-temp-FAC03-SN000777"], body
        entry = EnrollmentStore(tmp_path).get("sensor-temp-FAC03-SN000777")
        assert entry["record"]["provisioningStatus"] == "disabled"
        assert entry["certificates"]["primary"].strip() == issued["certificate"].strip()
        audit = lifecycle.db.fetch_all("SELECT action, device_id, reason_code FROM certificate_events "
                                       "WHERE action = 'dps_disallowed'")
        assert [(r["device_id"], r["reason_code"]) for r in audit] == [("sensor-temp-FAC03-SN000777", "keyCompromise")]

        renewed = sign(csr("sensor-temp-FAC03-SN000778"))[1]
        status, body = revoke({"serialNumber": renewed["serialNumber"], "deviceId": "sensor-temp-FAC03-SN000778",
                               "reason": "superseded"})
        assert status == 200 and body["disallowedAtDps"] == [] and body["warnings"] == []
        assert EnrollmentStore(tmp_path).get("sensor-temp-FAC03-SN000778") is None
    finally:
        adapter.close()
        server.server.config.timeout_graceful_shutdown = 1
        server.stop()
