"""Hubs are data: a hub added to a region through the CLI (`onboarding hubs add`) is used by the next allocation,
without a code change or a restart. Over the real webhook handler, real SQL (SQLite ODBC) and real CRL verification
(tests/allocation_harness.py); no stack. The hub is already linked by DPS (linkedHubs) and named by the app settings
(the harness's configured hubs), as the deployment leaves it (README "Adding a hub"): only its row is missing."""

from __future__ import annotations

import pytest

from cli import main as cli_main
from tests.allocation_harness import HUBS, build_webhook
from tests.contract.test_allocation_fallback_contract import on_record, without_certificate

pytestmark = pytest.mark.integration
NEW = "hub-west2.azure-devices.net"


@pytest.fixture
def webhook(tmp_path, monkeypatch):
    from shared.bootstrap import services

    hook = build_webhook(tmp_path, monkeypatch, max_devices=100)
    hook.db.execute("DELETE FROM iot_hubs WHERE host_name = ?", [NEW])
    monkeypatch.chdir(tmp_path)  # no ./local.settings.json
    monkeypatch.delenv("IOT_HUB_CONNECTION_STRINGS", raising=False)
    monkeypatch.setenv("SQL_CONNECTION_STRING", f"Driver=SQLite3;Database={tmp_path / 'alloc.db'}")
    monkeypatch.setenv("IOT_HUB_HOSTNAMES", ",".join(HUBS))
    monkeypatch.setenv("REGIONAL_CAS", "west=intermediate-ca-west")
    services.cache_clear()
    yield hook
    services.cache_clear()


def test_a_hub_added_through_the_cli_takes_the_next_device(webhook, capsys):
    for host in HUBS:  # every hub on record is at its limit; the new one is empty
        webhook.device_counts[host] = 0 if host == NEW else 100
    on_record(webhook)
    status, body = webhook.post(without_certificate())
    assert (status, body["error"]["code"]) == (409, "no_hub_capacity")

    assert cli_main.main(["hubs", "add", NEW, "--region", "west", "--max-devices", "100"]) == 0
    assert "note" not in capsys.readouterr().out

    status, body = webhook.post(without_certificate())
    assert status == 200 and body["iotHubHostName"] == NEW
    assert webhook.audit_rows()[-1]["hub"] == NEW

    # and `hubs set --accepting false` takes it out of the next decision again
    assert cli_main.main(["hubs", "set", NEW, "--accepting", "false"]) == 0
    status, body = webhook.post(without_certificate())
    assert (status, body["error"]["code"]) == (409, "no_hub_capacity")
