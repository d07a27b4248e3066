"""Every .bicep file parses with both offline parsers, and the templates hang together structurally."""

from __future__ import annotations

import json
import re

import pytest

from tests.infra.bicep import (
    INFRA,
    REPO,
    bicep_files,
    function_calls,
    load,
    ts_declarations,
    ts_errors,
    ts_module_paths,
)

FILES = bicep_files()
IDS = [str(p.relative_to(INFRA)) for p in FILES]


def rel(path) -> str:
    return str(path.relative_to(INFRA))


def test_there_are_templates():
    assert (INFRA / "main.bicep") in FILES
    assert len(FILES) >= 10


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_tree_sitter_parses_without_errors(path):
    assert ts_errors(path) == []


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_pycep_parses_and_agrees_with_tree_sitter(path):
    tree = load(rel(path))
    ts = ts_declarations(path)
    assert set(tree.parameters) == ts["parameters"]
    assert set(tree.variables) == ts["variables"]
    assert set(tree.resources) == ts["resources"]
    assert set(tree.modules) == ts["modules"]
    assert set(tree.outputs) == ts["outputs"]


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_parameter_has_a_description(path):
    tree = load(rel(path))
    missing = [name for name, p in tree.parameters.items()
               if not any(d["type"] == "description" for d in p["decorators"])]
    assert missing == [], f"{rel(path)}: parameters without @description: {missing}"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_api_versions_are_pinned_dates(path):
    for name, resource in load(rel(path)).resources.items():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", resource["api_version"]), (rel(path), name)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_loaded_files_exist(path):
    tree = load(rel(path))
    for call in function_calls(tree.tree, "load_text_content") + function_calls(tree.tree, "load_json_content"):
        assert (path.parent / call["file_path"]).is_file(), f"{rel(path)} loads missing {call['file_path']}"


def module_decls():
    for path in FILES:
        for symbol, module in load(rel(path)).modules.items():
            yield path, symbol, module


def body(declaration: dict) -> dict:
    """The object of a resource/module declaration, under its loop or condition if any."""
    config = declaration["config"]
    while "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


@pytest.mark.parametrize(("path", "symbol", "module"), list(module_decls()),
                         ids=[f"{rel(p)}:{s}" for p, s, _ in module_decls()])
def test_module_exists_and_its_parameters_match(path, symbol, module):
    target = path.parent / module["detail"]["path"]
    assert target.is_file(), f"{rel(path)} module {symbol}: {module['detail']['path']} does not exist"
    assert ts_module_paths(path)[symbol] == module["detail"]["path"]
    child = load(rel(target))
    passed = set(body(module).get("params", {}))
    unknown = passed - set(child.parameters)
    missing = child.required_parameters() - passed
    assert not unknown, f"{rel(path)} passes undeclared parameters to {rel(target)}: {sorted(unknown)}"
    assert not missing, f"{rel(path)} does not pass required parameters of {rel(target)}: {sorted(missing)}"


def test_every_module_file_is_used():
    used = {(p.parent / m["detail"]["path"]).resolve() for p, _, m in module_decls()}
    unused = [rel(p) for p in FILES if p.name != "main.bicep" and p.resolve() not in used]
    assert unused == []


def test_parameters_file_matches_main():
    main = load("main.bicep")
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(params) <= set(main.parameters), sorted(set(params) - set(main.parameters))
    assert main.required_parameters() <= set(params), sorted(main.required_parameters() - set(params))


def test_main_follows_the_azd_template_conventions():
    main = load("main.bicep")
    assert main.tree["globals"]["scope"]["value"] == "subscription"
    assert {"environmentName", "location", "principalId"} <= set(main.parameters)
    assert "resourceToken" in main.variables and "abbrs" in main.variables
    assert function_calls(main.variables["resourceToken"]["value"], "unique_string")
    assert main.object_keys("tags") == {"azd-env-name"}
    assert all(name == name.upper() for name in main.outputs), "azd outputs are UPPER_CASE settings"
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"abbrs\.(\w+)", (INFRA / "main.bicep").read_text()))
    assert used and used <= set(abbreviations), sorted(used - set(abbreviations))


def test_azure_yaml_points_at_this_infra():
    text = (REPO / "azure.yaml").read_text()
    assert re.search(r"^\s+path: infra$", text, re.M) and re.search(r"^\s+module: main$", text, re.M)
    assert re.search(r"^\s+host: function$", text, re.M) and "infra/deploy.sh" in text


def test_secure_defaults():
    storage = body(load("modules/storage.bicep").resources["account"])["properties"]
    assert storage["allowSharedKeyAccess"] is False and storage["allowBlobPublicAccess"] is False
    vault = body(load("modules/keyvault.bicep").resources["vault"])["properties"]
    assert vault["enableRbacAuthorization"] is True and vault["enablePurgeProtection"] is True
    assert vault["sku"]["name"] == "premium", "HSM-backed CA keys need the Premium SKU"
    sql = body(load("modules/sql.bicep").resources["server"])["properties"]["administrators"]
    assert sql["azureADOnlyAuthentication"] is True
    insights = body(load("modules/monitoring.bicep").resources["appInsights"])["properties"]
    assert insights["DisableLocalAuth"] is True
    hub = body(load("modules/iothubs.bicep").resources["hub"])["properties"]
    assert hub["disableDeviceSAS"] is True and hub["disableModuleSAS"] is True


def test_function_app_is_flex_consumption_with_always_ready_http():
    app = load("app/functions.bicep")
    plan = body(app.resources["plan"])
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = body(app.resources["site"])
    assert site["identity"]["type"] == "SystemAssigned"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    always_ready = config["scaleAndConcurrency"]["alwaysReady"]["operator"]["operands"]
    assert always_ready["true_value"][0]["name"] == "http"
    assert config["deployment"]["storage"]["authentication"]["type"] == "SystemAssignedIdentity"


def test_event_subscription_has_retry_and_dead_letter():
    events = load("modules/device-events.bicep")
    sub = body(events.resources["deviceCreated"])["properties"]
    assert sub["destination"]["endpointType"] == "AzureFunction"
    assert sub["filter"]["includedEventTypes"] == ["Microsoft.Devices.DeviceCreated"]
    assert set(sub["retryPolicy"]) == {"maxDeliveryAttempts", "eventTimeToLiveInMinutes"}
    assert sub["deadLetterWithResourceIdentity"]["deadLetterDestination"]["endpointType"] == "StorageBlob"
