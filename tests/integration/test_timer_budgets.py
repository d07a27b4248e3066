"""Issue 16: a timer run has its own budget (shared/retry.py RunBudget). With one hub hung (a TCP proxy that holds
every byte, local/storage_proxy.py), the funnel's run ends, reports that hub incomplete and the other one left to
the next run because its budget was spent, and touches nothing it did not finish; the next run, with the hub back,
does the work."""

from __future__ import annotations

import base64
import secrets

import pytest
from azure.iot.hub import IoTHubRegistryManager

from funnel.records import DigestLedger
from funnel.service import Reconciler
from funnel.settings import FunnelSettings
from local.iothub import HubConfig, RateLimits, connection_string, create_app
from local.serve import free_port, serve_in_thread
from local.storage_proxy import FaultProxy, Route
from shared.audit import AuditWriter
from shared.iothub import IotHub
from shared.retry import RetryPolicy, RunBudget
from shared.sql import Database
from tests.integration.test_funnel_reconcile import FAC01, QUIET, DevicePki, Sent, funnel_tag, onboarded, stage_rows

pytestmark = pytest.mark.integration
OWNER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return DevicePki(tmp_path_factory.mktemp("budget-pki"))


@pytest.fixture
def database(tmp_path):
    from local.seed import migrations

    db = Database(f"Driver=SQLite3;Database={tmp_path / 'funnel.sqlite'}")
    migrations.apply_migrations(db)
    yield db
    db.close()


def start_hub(tls, tmp_path_factory, name: str, host_port: int | None = None):
    """A hub emulator on a free port; host_port: the port its clients use (a proxy's), when not its own."""
    port = free_port()
    config = HubConfig(name=name, host_name=f"localhost:{host_port or port}", state_dir=tmp_path_factory.mktemp(name),
                       port=port, policies={"iothubowner": OWNER_KEY}, rate_limits=RateLimits(enabled=False))
    app = create_app(config)
    return app.state.hub, serve_in_thread(app, port, tls)


@pytest.fixture(scope="module")
def hubs(tls, tmp_path_factory):
    """Hub A behind a proxy a test can hold, hub B direct; a registry client for each."""
    proxy_port = free_port()
    hub_a, server_a = start_hub(tls, tmp_path_factory, "iothub-hung-local", proxy_port)
    proxy = FaultProxy([Route("iothub", proxy_port, hub_a.config.port)], None).start()
    hub_b, server_b = start_hub(tls, tmp_path_factory, "iothub-fine-local")
    registries = {h.config.host_name: IoTHubRegistryManager.from_connection_string(connection_string(h.config))
                  for h in (hub_a, hub_b)}
    yield hub_a, hub_b, proxy, registries
    proxy.hold(0)
    for registry in registries.values():
        registry.protocol.close()
    proxy.stop()
    server_a.stop()
    server_b.stop()


def test_a_hung_hub_ends_the_run_within_its_budget_and_the_next_run_does_the_work(hubs, pki, tls, database):
    hub_a, hub_b, proxy, registries = hubs
    device_id, _device = onboarded(hub_b, registries[hub_b.config.host_name], pki, tls)
    gateway = IotHub(registries.__getitem__, RetryPolicy(attempts=3, base_s=0.2, budget_s=30), timeout_s=2)
    sent = Sent()
    funnel = Reconciler(FunnelSettings(limits=QUIET), gateway, [hub_a.config.host_name, hub_b.config.host_name],
                        AuditWriter(database), DigestLedger(database), {"FAC01": FAC01}.get, sent.queue, sent.email)

    proxy.hold(3600)  # hub A answers nothing, for far longer than any run may take
    budget = RunBudget("onboarding_funnel", 3, reserve_s=1.5)
    first = funnel.run(budget)
    assert first.incomplete_hubs == [hub_a.config.host_name]  # its query timed out; no retry fitted the budget
    assert first.budget["budgetExhausted"] and first.budget["left"] == {"hubs": 1}  # hub B left to the next run
    assert stage_rows(database, device_id) == {}  # nothing half done on B
    assert "stage" not in funnel_tag(registries[hub_b.config.host_name], device_id)

    proxy.hold(0)
    second = funnel.run()
    assert second.incomplete_hubs == [] and second.budget["left"] == {}
    assert stage_rows(database, device_id).keys() == {"allocated", "created", "configured"}
    assert funnel_tag(registries[hub_b.config.host_name], device_id)["stage"] == "configured"
