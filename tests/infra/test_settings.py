"""Every app setting the code reads is set by the Bicep, and every setting the Bicep sets is read by the code.

The settings are discovered from the product code (tests/infra/code_scan.py), so the check follows the code as
features land. The only list kept by hand is infra/app-settings.json: the exceptions, each with its reason.
"""

from __future__ import annotations

import json

from tests.infra.bicep import INFRA, load
from tests.infra.code_scan import app_settings, functions

# Flex Consumption refuses these as app settings (they live in functionAppConfig).
FLEX_FORBIDDEN = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
                  "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "AzureWebJobsStorage"}


def exceptions() -> dict:
    return json.loads((INFRA / "app-settings.json").read_text())


def bicep_settings() -> set[str]:
    app = load("app/functions.bicep")
    config = app.resources_of_type("Microsoft.Web/sites/config")
    (settings,) = [r for r in config.values() if r["config"]["name"] == "appsettings"]
    return app.object_keys(settings["config"]["properties"])


def test_settings_are_discovered_from_the_code():
    found = app_settings().names
    # A few the code has read from the start: if these disappear, discovery is broken, not the code.
    assert {"SQL_CONNECTION_STRING", "KEY_VAULT_URL", "REGIONAL_CAS", "IOT_HUB_HOSTNAMES"} <= found


def test_every_setting_the_code_reads_is_set_by_the_bicep():
    not_in_azure = exceptions()["readByCodeNotSetInAzure"]
    missing = app_settings().names - bicep_settings() - set(not_in_azure)
    detail = {name: app_settings().places[name][:2] for name in sorted(missing)}
    assert not missing, f"settings read by the code but not set in infra/app/functions.bicep: {detail}"


def test_every_setting_the_bicep_sets_is_read_by_the_code_or_the_platform():
    platform = exceptions()["setInAzureNotReadByCode"]
    extra = bicep_settings() - app_settings().names - set(platform)
    assert not extra, f"settings set in infra/app/functions.bicep that nothing reads: {sorted(extra)}"


def test_exceptions_are_not_stale():
    listed = exceptions()
    stale = set(listed["readByCodeNotSetInAzure"]) - app_settings().names
    assert not stale, f"infra/app-settings.json lists settings the code no longer reads: {sorted(stale)}"
    assert not set(listed["readByCodeNotSetInAzure"]) & bicep_settings()
    assert set(listed["setInAzureNotReadByCode"]) <= bicep_settings()


def test_no_setting_flex_consumption_refuses():
    assert not bicep_settings() & FLEX_FORBIDDEN


def test_no_secret_in_app_settings():
    keys = bicep_settings()
    assert not {k for k in keys if k.endswith(("_KEY", "_PASSWORD", "_SECRET"))}
    assert not keys & set(exceptions()["readByCodeNotSetInAzure"]), "connection strings stay out of Azure"


def test_every_binding_connection_is_configured():
    settings = bicep_settings()
    for name, spec in functions().items():
        for binding in (spec.trigger, *spec.other_bindings):
            connection = binding.get("connection")
            if connection:
                assert connection in settings or any(s.startswith(f"{connection}__") for s in settings), (
                    f"{name}: binding connection {connection} has neither a setting nor {connection}__* settings")
