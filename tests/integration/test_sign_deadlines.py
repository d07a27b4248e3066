"""POST /api/certificates/sign answers within CERT_SIGN_DEADLINE_SECONDS whatever Key Vault does (issue 16): the
Key Vault emulator on a free port under a fault profile that hangs every call (connections accepted, no answer
for 30 s), the product's own certificate client with azure-core timeouts longer than the deadline, and the
endpoint still answers 503 with Retry-After in time; the refusal is audited once the work gives up."""

from __future__ import annotations

import dataclasses
import time

import pytest

from cert_lifecycle import functions
from cert_lifecycle.authority import CaDirectory, CertificateIssuer
from local.faults import FaultEngine, service_profile
from local.keyvault import create_app as vault_app
from local.serve import free_port, serve_in_thread
from shared import keyvault
from shared.config import RegionalCa, Settings
from tests.contract.test_cert_http_contract import csr, sign
from tests.contract.test_cert_http_contract import lifecycle as lifecycle
from tests.integration.test_faults_standins import Token
from tests.integration.test_iothub_emulator import IDENTITY_KEY

pytestmark = pytest.mark.integration
DEADLINE_S = 2.0
HANG = {"services": {"keyvault": {"default": {"errors": {"hang": 1.0}, "hang_s": 30}}}}


@pytest.fixture
def hung_vault(tls, tmp_path):
    faults = FaultEngine(service_profile(HANG, "keyvault", "hang"))
    port = free_port()
    server = serve_in_thread(vault_app(tmp_path, IDENTITY_KEY, faults=faults), port, tls)
    yield f"https://localhost:{port}", faults
    server.server.config.timeout_graceful_shutdown = 1
    server.stop()


def test_sign_answers_503_with_retry_after_within_its_deadline_when_key_vault_hangs(lifecycle, hung_vault):
    url, faults = hung_vault
    settings = Settings({"KEY_VAULT_URL": url, "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "false"})
    # The shared defaults (15 s read timeout, retries): longer than the deadline, so only the deadline can answer.
    certificates = keyvault.certificate_client(settings, Token(IDENTITY_KEY))
    regional = [RegionalCa("west", "intermediate-ca-west")]
    lifecycle.settings = dataclasses.replace(lifecycle.settings, sign_deadline_s=DEADLINE_S)
    lifecycle.cas = CaDirectory(regional, certificates, lambda key_id: None)
    lifecycle.issuer = CertificateIssuer(lifecycle.cas, lifecycle.records, lifecycle.audit, lifecycle.settings,
                                         partners=lifecycle.partners)
    started = time.monotonic()
    response = functions.sign_csr.build().get_user_function()(_request(csr()))
    took = time.monotonic() - started
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert b"dependency_unavailable" in response.get_body() and b"deadline" in response.get_body()
    assert took < DEADLINE_S + 1.0, took
    assert faults.counters()["injected"]["hang"] >= 1
    # the refusal is audited in the background, with its code
    deadline = time.monotonic() + 5
    rows = []
    while not rows and time.monotonic() < deadline:
        rows = lifecycle.db.fetch_all("SELECT reason_code FROM certificate_events WHERE action = 'rejected'")
        time.sleep(0.1)
    assert [r["reason_code"] for r in rows] == ["dependency_unavailable"]


def test_sign_still_signs_when_key_vault_answers(lifecycle):
    lifecycle.settings = dataclasses.replace(lifecycle.settings, sign_deadline_s=DEADLINE_S)
    status, body = sign(csr())
    assert status == 200 and body["issuer"] == "intermediate-ca-west"


def _request(body: bytes):
    import azure.functions as func

    return func.HttpRequest("POST", "/api/certificates/sign", body=body, headers={})
