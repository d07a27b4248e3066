"""The webhook answers within ALLOCATION_DEADLINE_SECONDS whatever a dependency does (issue 16): each dependency on
the allocation path (Key Vault, Blob, the hubs' registry statistics, SQL) replaced by one that hangs, on a free
port: a server that accepts connections and never answers, or a SQLite lock held by another connection."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest
from azure.core.credentials import AccessToken

from allocation import service as handler
from allocation.audit import AuditTrail
from allocation.capacity import CapacityMonitor
from allocation.trust import TrustStore
from allocation.wiring import DeadlineBudget
from local.serve import free_port
from shared import keyvault, storage
from shared.config import Settings
from shared.facilities import FacilityDirectory
from shared.iothub import IotHub, RegistryClients
from shared.sql import Database
from shared.storage import BlobStore
from tests.allocation_harness import HUBS, build_webhook
from tests.contract.test_allocation_refusals import RID, request_for

pytestmark = pytest.mark.integration
DEADLINE_S = 2.0
BUDGET = DeadlineBudget(DEADLINE_S)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ANSWER_TIMES: dict[str, float] = {}


class HungServer:
    """Accepts every connection and never sends a byte."""

    def __init__(self):
        self.port = free_port()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(128)
        self._held: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    @property
    def connections(self) -> int:
        return len(self._held)

    def close(self):
        self._stop = True
        self._sock.close()
        for conn in self._held:
            conn.close()


class Token:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("token", int(time.time()) + 3600)


@pytest.fixture
def hung():
    server = HungServer()
    yield server
    server.close()


@pytest.fixture
def webhook(tmp_path, monkeypatch):
    hook = build_webhook(tmp_path, monkeypatch)
    monkeypatch.setattr(handler, "deadline_budget", lambda: BUDGET)
    return hook


def timed_post(webhook, body, label: str):
    started = time.perf_counter()
    status, answer = webhook.post(body)
    took = time.perf_counter() - started
    ANSWER_TIMES[label] = max(took, ANSWER_TIMES.get(label, 0.0))
    print(f"\n{label}: {status} {answer and answer.get('error', {}).get('code')} in {took:.2f}s")
    return status, answer, took


def settings(**values) -> Settings:
    return Settings({"REGIONAL_CAS": "west=intermediate-ca-west", **values})


def test_hung_key_vault_answers_503_within_the_deadline(webhook, hung):
    vault = keyvault.certificate_client(settings(KEY_VAULT_URL=f"https://127.0.0.1:{hung.port}/"), Token(),
                                        keyvault.deadline_options(BUDGET.call_s))
    webhook.context.trust = TrustStore(settings(), vault, webhook.crls)
    for _ in range(2):
        status, body, took = timed_post(webhook, request_for(webhook.ca.issue(RID)), "key vault hung")
        assert status == 503 and body["error"]["code"] == "crl_unavailable", body
        assert took < DEADLINE_S
    assert webhook.last_headers["Retry-After"] == "5"
    assert hung.connections >= 1


def test_hung_blob_storage_answers_503_within_the_deadline(webhook, hung):
    blob = storage.blob_service(settings(STORAGE_CONNECTION_STRING=(
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{hung.port}/devstoreaccount1;")), None, timeout_s=BUDGET.call_s)
    from tests.allocation_harness import FakeCertificates

    webhook.context.trust = TrustStore(settings(), FakeCertificates({webhook.ca.name: webhook.ca}),
                                       BlobStore.for_container(lambda: blob, "crl"))
    status, body, took = timed_post(webhook, request_for(webhook.ca.issue(RID)), "blob hung")
    assert status == 503 and body["error"]["code"] == "crl_unavailable", body
    assert took < DEADLINE_S


def hung_hubs(port: int) -> IotHub:
    from azure.iot.hub import IoTHubRegistryManager

    registries = RegistryClients(lambda host: IoTHubRegistryManager.from_connection_string(
        f"HostName=127.0.0.1:{port};SharedAccessKeyName=iothubowner;SharedAccessKey={AZURITE_KEY}"))
    return IotHub(registries, BUDGET.statistics, BUDGET.call_s)


def test_every_hub_statistics_hung_answers_503_not_no_hub_capacity(webhook, hung):
    hubs = hung_hubs(hung.port)
    webhook.context.capacity = CapacityMonitor(webhook.db, hubs.device_count, list(HUBS), ttl_s=60,
                                               wait_s=BUDGET.decide_s)
    for _ in range(2):  # the first request loads (and times out); the second must not wait behind it
        status, body, took = timed_post(webhook, request_for(webhook.ca.issue(RID)), "hub statistics hung")
        assert status == 503 and body["error"]["code"] == "dependency_unavailable", body
        assert took < DEADLINE_S
    assert [r["reason_code"] for r in webhook.audit_rows()] == ["dependency_unavailable"] * 2


def test_one_hub_statistics_failing_later_keeps_the_hub(webhook):
    counts = SimpleNamespace(down=False)

    def device_count(host):
        if counts.down:
            raise TimeoutError(host)
        return 0

    clock = SimpleNamespace(now=0.0)
    webhook.context.capacity = CapacityMonitor(webhook.db, device_count, list(HUBS), ttl_s=10, quiet_s=0,
                                               clock=lambda: clock.now)
    assert webhook.post(request_for(webhook.ca.issue(RID)))[0] == 200  # anchors every hub in SQL
    counts.down = True
    for later in (11, 25, 60):  # refresh fails: the anchored SQL estimate keeps each hub in the decision
        clock.now = later
        status, body = webhook.post(request_for(webhook.ca.issue(RID)))
        assert status == 200 and body["iotHubHostName"] == "hub-west.azure-devices.net", body


def test_sql_lock_answers_503_within_the_deadline(webhook, tmp_path):
    database = Database(f"Driver=SQLite3;Database={tmp_path / 'alloc.db'}", timeout_s=BUDGET.sql_s)
    webhook.context.facilities = FacilityDirectory(database, 60, stale_s=60, wait_s=BUDGET.decide_s)
    webhook.context.capacity = CapacityMonitor(database, lambda host: 0, list(HUBS), ttl_s=60, quiet_s=0,
                                               wait_s=BUDGET.decide_s)
    handler_audit = AuditTrail(database)
    service_audit = handler.audit_trail
    try:
        handler.audit_trail = lambda: handler_audit
        lock = sqlite3.connect(tmp_path / "alloc.db", timeout=0)
        lock.execute("BEGIN EXCLUSIVE")  # another process holding the database
        try:
            for _ in range(2):
                status, body, took = timed_post(webhook, request_for(webhook.ca.issue(RID)), "sql locked")
                assert status == 503 and body["error"]["code"] == "dependency_unavailable", body
                assert took < DEADLINE_S
        finally:
            lock.rollback()
            lock.close()
        webhook.context.facilities = FacilityDirectory(database, 60)  # the failure is remembered a few seconds
        status, body, _ = timed_post(webhook, request_for(webhook.ca.issue(RID)), "sql released")
        assert status == 200, body
    finally:
        handler.audit_trail = service_audit


def test_a_decision_that_outlives_the_deadline_is_answered_503(webhook, monkeypatch):
    release = threading.Event()
    original = webhook.context.facilities.get

    def hung_get(code):
        release.wait(10)
        return original(code)

    monkeypatch.setattr(webhook.context.facilities, "get", hung_get)
    try:
        status, body, took = timed_post(webhook, request_for(webhook.ca.issue(RID)), "decision hung (watchdog)")
        assert status == 503 and body["error"]["code"] == "dependency_unavailable"
        assert "deadline" in body["error"]["detail"] and took < DEADLINE_S
    finally:
        release.set()
