"""Each stand-in takes a fault profile (local/faults.py), served on a free port: what a client sees is what the
profile says (throttling with Retry-After, a reset connection, a hang its timeout ends, an outage), and the
stand-in counts what it injected at GET /_faults."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.keyvault.keys import KeyClient

from local.dps.service import create_app as dps_app
from local.faults import FaultEngine, service_profile
from local.identity import identity_app, issue_token
from local.iothub.app import create_app as hub_app
from local.keyvault import create_app as vault_app
from local.serve import free_port, serve_in_thread
from tests.integration.test_iothub_emulator import IDENTITY_KEY, hub_config

pytestmark = pytest.mark.integration


class Token:
    """A local managed-identity token for any scope (what the vault emulator accepts)."""

    def __init__(self, key: bytes):
        self.key = key

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        token, expires = issue_token(self.key, scopes[0])
        return AccessToken(token, expires)


def engine(service: str, part: dict) -> FaultEngine:
    return FaultEngine(service_profile({"seed": 1, "services": {service: part}}, service, "test"))


def client(tls, port: int, scheme: str = "https", timeout: float = 10) -> httpx.Client:
    verify = ssl.create_default_context(cafile=tls.ca_bundle) if scheme == "https" else False
    return httpx.Client(base_url=f"{scheme}://localhost:{port}", verify=verify, timeout=timeout)


def test_hub_throttles_and_resets_service_calls_but_leaves_device_routes_alone(tls, tmp_path):
    faults = engine("iothub", {
        "exempt": ["^/devices/[^/]+/twin($|/)"],
        "operations": [
            {"name": "registry statistics", "method": "GET", "path": "^/statistics/devices$",
             "errors": {"429": 1.0}, "retry_after_s": 3},
            {"name": "twin read", "method": "GET", "path": "^/twins/", "errors": {"reset": 1.0}},
        ]})
    port = free_port()
    server = serve_in_thread(hub_app(hub_config(tmp_path, port), faults=faults), port, tls)
    try:
        with client(tls, port) as http:
            throttled = http.get("/statistics/devices", params={"api-version": "2021-04-12"})
            with pytest.raises(httpx.TransportError):  # the connection is dropped without an answer
                http.get("/twins/sensor-1", params={"api-version": "2021-04-12"})
            device_side = http.get("/devices/sensor-1/twin", params={"api-version": "2021-04-12"})
            harness = http.get("/statistics/devices", params={"api-version": "2021-04-12"},
                               headers={"x-local-faults": "exempt"})
            counters = http.get("/_faults").json()
    finally:
        server.stop()
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
    assert device_side.status_code == 401  # the emulator's own answer: no device credential, no fault
    assert harness.status_code == 401  # the verifier's own reads are never faulted (no SAS here: the hub's answer)
    assert counters["service"] == "iothub" and counters["injected"] == {"429": 1, "reset": 1}
    assert counters["operations"] == {"registry statistics": {"429": 1}, "twin read": {"reset": 1}}
    assert counters["events"]["pending"] == {"delivery": 0, "deadLetter": 0}


def test_a_hung_key_vault_is_ended_by_the_client_timeout(tls, tmp_path):
    faults = engine("keyvault", {"default": {"errors": {"hang": 1.0}, "hang_s": 20}})
    port = free_port()
    server = serve_in_thread(vault_app(tmp_path, IDENTITY_KEY, faults=faults), port, tls)
    keys = KeyClient(f"https://localhost:{port}", Token(IDENTITY_KEY), verify_challenge_resource=False,
                     connection_timeout=1, read_timeout=1, retry_total=0)
    started = time.monotonic()
    try:
        with pytest.raises((ServiceResponseError, ServiceRequestError)):
            keys.get_key("ca-west")
        waited = time.monotonic() - started
        with client(tls, port) as http:
            counters = http.get("/_faults").json()
    finally:
        keys.close()
        server.server.config.timeout_graceful_shutdown = 1
        server.stop()
    assert waited < 5  # the SDK's read timeout, not the 20 s hang
    assert counters["service"] == "keyvault" and counters["injected"]["hang"] >= 1


def test_the_identity_endpoint_answers_503_during_a_scheduled_outage_then_tokens_again(tls):
    faults = engine("identity", {"outages": [{"after_s": 0, "for_s": 1.0, "fault": "503"}],
                                 "default": {"retry_after_s": 1}})
    port = free_port()
    server = serve_in_thread(identity_app(IDENTITY_KEY, "header", faults=faults), port)
    try:
        with client(tls, port, "http") as http:
            params, headers = {"resource": "https://vault.azure.net"}, {"X-IDENTITY-HEADER": "header"}
            during = http.get("/msi/token", params=params, headers=headers)
            time.sleep(1.1)
            after = http.get("/msi/token", params=params, headers=headers)
            counters = http.get("/_faults").json()
    finally:
        server.stop()
    assert during.status_code == 503 and during.headers["Retry-After"] == "1"
    assert after.status_code == 200 and after.json()["access_token"]
    assert counters["operations"] == {"outage": {"503": 1}} and counters["requests"] == 2


def test_the_dps_service_api_fails_with_500_and_adds_latency(tls, tmp_path):
    faults = engine("dps", {"default": {"latency_ms": [200, 200], "errors": {"500": 1.0}}})
    port = free_port()
    server = serve_in_thread(dps_app(tmp_path, IDENTITY_KEY, f"localhost:{port}", fault_profile=faults), port, tls)
    try:
        with client(tls, port) as http:
            started = time.monotonic()
            answer = http.get("/enrollments/sensor-1", params={"api-version": "2021-10-01"})
            took = time.monotonic() - started
            counters = http.get("/_faults").json()
    finally:
        server.stop()
    assert answer.status_code == 500 and answer.headers["x-local-fault"] == "injected"
    assert took >= 0.2
    assert counters["service"] == "dps" and counters["injected"] == {"500": 1}
