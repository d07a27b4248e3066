"""Diagnostic settings on every resource type the issue lists, and the private networking switch: with vnetEnabled
no listed resource takes public clients and no firewall rule admits 0.0.0.0; without it, today's topology with the
SQL "allow Azure services" rule as an explicit parameter.

The Bicep is read by the offline parsers (tests/infra/bicep.py) and its boolean expressions are evaluated here for
each value of the switch: main.bicep's parameters -> the values main passes to each module -> the module's
properties and resource conditions.
"""

from __future__ import annotations

import itertools

import pytest

from tests.infra.bicep import load, walk
from tests.infra.test_bicep import body

MAIN = load("main.bicep")

# Resource type -> module file that creates it (the list).
DIAGNOSED = {
    "Microsoft.KeyVault/vaults": "modules/keyvault.bicep",
    "Microsoft.Devices/IotHubs": "modules/iothubs.bicep",
    "Microsoft.Devices/provisioningServices": "modules/dps.bicep",
    "Microsoft.Sql/servers/databases": "modules/sql.bicep",
    "Microsoft.EventGrid/systemTopics": "modules/iothubs.bicep",
    "Microsoft.Storage/storageAccounts/blobServices": "modules/storage.bicep",
    "Microsoft.Storage/storageAccounts/queueServices": "modules/storage.bicep",
    "Microsoft.Web/sites": "app/functions.bicep",
}
MODULE_OF = {"modules/keyvault.bicep": "keyVault", "modules/iothubs.bicep": "hubs", "modules/dps.bicep": "dps",
             "modules/sql.bicep": "sql", "modules/storage.bicep": "storage", "app/functions.bicep": "functionApp"}


def evaluate(value, bindings: dict):
    """A boolean/string expression of the pycep tree: names from bindings, literals (and what this does not evaluate,
    such as function calls) as they are."""
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return bindings.get(value, value)
    if isinstance(value, dict) and "operator" in value:
        op, operands = value["operator"]["type"], value["operator"]["operands"]
        if op == "conditional":
            branch = "true_value" if evaluate(operands["condition"], bindings) else "false_value"
            return evaluate(operands[branch], bindings)
        if op == "not":
            return not evaluate(operands["bool_value"], bindings)
        if op == "and":
            return evaluate(operands["operand_1"], bindings) and evaluate(operands["operand_2"], bindings)
        if op == "or":
            return evaluate(operands["operand_1"], bindings) or evaluate(operands["operand_2"], bindings)
        return value
    if isinstance(value, dict) and "function" in value:
        return value
    if isinstance(value, dict):
        return {key: evaluate(item, bindings) for key, item in value.items()}
    if isinstance(value, list):
        return [evaluate(item, bindings) for item in value]
    return value


def main_bindings(**switches) -> dict:
    params = {name: p.get("default") for name, p in MAIN.parameters.items()}
    params.update(switches)
    params["hubsPublic"] = evaluate(MAIN.variables["hubsPublic"]["value"], params)
    return params


def module_bindings(relative: str, switches: dict) -> dict:
    """The module's parameters (defaults) with the values main passes to it under these switches."""
    module = load(relative)
    bindings = {name: p.get("default") for name, p in module.parameters.items()}
    passed = body(MAIN.modules[MODULE_OF[relative]])["params"]
    main = main_bindings(**switches)
    for name, value in passed.items():
        if isinstance(value, str) and value in main:
            bindings[name] = main[value]
        elif isinstance(value, dict) and "operator" in value:
            bindings[name] = evaluate(value, main)
    return bindings


def deployed(resource: dict, bindings: dict) -> bool:
    condition = resource["config"].get("condition")
    return condition is None or bool(evaluate(condition, bindings))


@pytest.mark.parametrize("resource_type", sorted(DIAGNOSED))
def test_every_listed_resource_type_sends_its_logs_to_the_workspace(resource_type):
    relative = DIAGNOSED[resource_type]
    module = load(relative)
    symbols = [name for name, r in module.resources_of_type(resource_type).items() if not r["existing"]]
    assert symbols, f"{relative} creates no {resource_type}"
    settings = module.resources_of_type("Microsoft.Insights/diagnosticSettings")
    for symbol in symbols:
        matching = []
        for setting in settings.values():
            scope = body(setting)["scope"]
            target = scope["operator"]["operands"]["operand_1"] if isinstance(scope, dict) else scope
            if target == symbol:
                matching.append(body(setting)["properties"])
        assert matching, f"{relative}: {resource_type} '{symbol}' has no diagnostic setting"
        for properties in matching:
            assert properties["workspaceId"] == "logAnalyticsWorkspaceId"
            assert properties["logs"], f"{symbol}: a setting without logs"
    passed = str(body(MAIN.modules[MODULE_OF[relative]])["params"]["logAnalyticsWorkspaceId"])
    assert "'monitoring'" in passed and "'logAnalyticsId'" in passed, passed


def test_key_vault_logs_its_audit_events():
    properties = body(load("modules/keyvault.bicep").resources["diagnostics"])["properties"]
    assert properties["logs"] == [{"category": "AuditEvent", "enabled": True}]


# Resource type -> (module, resource symbol) whose public network access the switch decides.
PUBLIC_ACCESS = {
    "Microsoft.KeyVault/vaults": ("modules/keyvault.bicep", "vault"),
    "Microsoft.Storage/storageAccounts": ("modules/storage.bicep", "account"),
    "Microsoft.Sql/servers": ("modules/sql.bicep", "server"),
    "Microsoft.Devices/IotHubs": ("modules/iothubs.bicep", "hub"),
    "Microsoft.Devices/provisioningServices": ("modules/dps.bicep", "dps"),
}


def public_clients(resource_type: str, switches: dict) -> bool:
    """Whether any client on the internet may reach the resource's public endpoint."""
    relative, symbol = PUBLIC_ACCESS[resource_type]
    properties = evaluate(body(load(relative).resources[symbol])["properties"], module_bindings(relative, switches))
    if properties["publicNetworkAccess"] == "Disabled":
        return False
    acls = properties.get("networkAcls")
    # Storage keeps its public endpoint for trusted Azure services only (Event Grid dead-lettering cannot use a
    # private endpoint): default Deny, no IP or network rule.
    if resource_type == "Microsoft.Storage/storageAccounts" and acls and acls["defaultAction"] == "Deny":
        return bool(acls.get("ipRules") or acls.get("virtualNetworkRules"))
    return True


def sql_firewall_rules(switches: dict) -> list[dict]:
    relative = "modules/sql.bicep"
    bindings = module_bindings(relative, switches)
    return [evaluate(body(r)["properties"], bindings) for r in load(relative).resources_of_type(
        "Microsoft.Sql/servers/firewallRules").values() if deployed(r, bindings)]


@pytest.mark.parametrize("sql_allow", [True, False])
def test_with_private_networking_no_resource_takes_public_clients(sql_allow):
    switches = {"vnetEnabled": True, "devicePublicNetworkAccess": False, "sqlAllowAzureServices": sql_allow}
    assert {t: public_clients(t, switches) for t in PUBLIC_ACCESS} == dict.fromkeys(PUBLIC_ACCESS, False)
    assert sql_firewall_rules(switches) == []


def test_with_private_networking_devices_on_the_internet_keep_the_hubs_and_dps_public():
    switches = {"vnetEnabled": True, "devicePublicNetworkAccess": True}
    public = {t for t in PUBLIC_ACCESS if public_clients(t, switches)}
    assert public == {"Microsoft.Devices/IotHubs", "Microsoft.Devices/provisioningServices"}
    assert sql_firewall_rules(switches) == []


def test_without_private_networking_today_s_topology_with_an_explicit_azure_services_rule():
    assert MAIN.parameters["vnetEnabled"]["default"] is False
    assert MAIN.parameters["sqlAllowAzureServices"]["default"] is True
    for switches in ({}, {"devicePublicNetworkAccess": False}):
        assert all(public_clients(t, {"vnetEnabled": False, **switches}) for t in PUBLIC_ACCESS)
    (rule,) = sql_firewall_rules({"vnetEnabled": False, "sqlAllowAzureServices": True})
    assert rule == {"startIpAddress": "0.0.0.0", "endIpAddress": "0.0.0.0"}  # noqa: S104 (the rule, not a bind)
    assert sql_firewall_rules({"vnetEnabled": False, "sqlAllowAzureServices": False}) == []


def test_no_firewall_rule_anywhere_admits_everyone_unconditionally():
    for relative in ("modules/sql.bicep",):
        for resource in load(relative).resources_of_type("Microsoft.Sql/servers/firewallRules").values():
            assert resource["config"].get("condition"), "a firewall rule is created whatever the switch"


def test_the_network_modules_follow_the_switch():
    for symbol in ("network", "privateEndpoints"):
        assert MAIN.modules[symbol]["config"]["condition"] == "vnetEnabled"
    site = body(load("app/functions.bicep").resources["site"])["properties"]
    assert "virtualNetworkSubnetId" in site
    passed = body(MAIN.modules["functionApp"])["params"]["virtualNetworkSubnetId"]
    assert evaluate(passed, {"vnetEnabled": False}) == ""


def test_every_listed_service_gets_a_private_endpoint_and_its_dns_zone():
    endpoints = load("modules/private-endpoints.bicep")
    groups = {item["groupId"] for item in endpoints.variables["single"]["value"]}
    groups |= {endpoints.variables["hubs"]["value"]["config"]["groupId"]}
    assert groups == {"vault", "blob", "queue", "sqlServer", "iotDps", "iotHub"}
    zones = load("modules/network.bicep").variables["zoneNames"]["value"]
    assert {"privatelink.vaultcore.azure.net", "privatelink.azure-devices.net",
            "privatelink.azure-devices-provisioning.net"} <= set(zones)
    assert any("privatelink.blob." in z for z in zones) and any("privatelink.queue." in z for z in zones)
    assert any(z.startswith("privatelink${environment().suffixes.sqlServerHostname}") for z in zones)
    subnets = body(load("modules/network.bicep").resources["vnet"])["properties"]["subnets"]
    app = next(s for s in subnets if s["name"] == "app")
    assert app["properties"]["delegations"][0]["properties"]["serviceName"] == "Microsoft.App/environments"


def test_the_dps_hub_policy_has_no_device_connect():
    hub = body(load("modules/iothubs.bicep").resources["hub"])["properties"]
    (policy,) = hub["authorizationPolicies"]
    assert policy["keyName"] == "provisioningservice" and policy["rights"] == "RegistryWrite, ServiceConnect"


@pytest.mark.parametrize(("vnet", "devices"), list(itertools.product([True, False], repeat=2)))
def test_every_combination_evaluates(vnet, devices):
    switches = {"vnetEnabled": vnet, "devicePublicNetworkAccess": devices}
    for resource_type in PUBLIC_ACCESS:
        public_clients(resource_type, switches)
    assert all(isinstance(v, (str, bool, int, type(None), dict, list)) for v in walk(main_bindings(**switches)))
