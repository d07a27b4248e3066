"""The function app's role assignments cover every Azure operation the code performs, and nothing broader.

Operations are found in the code by SDK method name (tests/infra/code_scan.py), mapped to the data action the
service checks (Microsoft Learn: "Control access to IoT Hub by using Microsoft Entra ID", "Azure built-in roles",
Key Vault "RBAC guide", Storage "Authorize access with Microsoft Entra ID"), and matched against the roles that
infra/modules/rbac.bicep assigns at each service's scope (read from the parsed tree, default parameters).
"""

from __future__ import annotations

import re
from fnmatch import fnmatch

import pytest

from tests.infra.bicep import load
from tests.infra.code_scan import REPO, functions, method_calls
from tests.infra.test_bicep import body

RBAC = load("modules/rbac.bicep")

# Built-in role id -> (name, data actions), from "Azure built-in roles".
ROLES = {
    # The three Blob Data roles' Actions also hold generateUserDelegationKey/action (user delegation SAS).
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": ("Storage Blob Data Owner", [
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*",
        "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"]),
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": ("Storage Blob Data Reader", [
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"]),
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": ("Storage Blob Data Contributor", [
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action",
        "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"]),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": ("Storage Queue Data Contributor", [
        "Microsoft.Storage/storageAccounts/queueServices/queues/messages/*"]),
    "12338af0-0e69-4776-bea7-57ae8d297424": ("Key Vault Crypto User", [
        "Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/sign/action",
        "Microsoft.KeyVault/vaults/keys/verify/action"]),
    "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba": ("Key Vault Certificate User", [
        "Microsoft.KeyVault/vaults/certificates/read", "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        "Microsoft.KeyVault/vaults/keys/read"]),
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": ("Key Vault Secrets Officer", ["Microsoft.KeyVault/vaults/secrets/*"]),
    "4633458b-17de-408a-b874-0445c86b69e6": ("Key Vault Secrets User", [
        "Microsoft.KeyVault/vaults/secrets/getSecret/action", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"]),
    "a4417e6f-fecd-4de8-b567-7b0420556985": ("Key Vault Certificates Officer", [
        "Microsoft.KeyVault/vaults/certificates/*"]),
    "3913510d-42f4-4e42-8a64-420c390055eb": ("Monitoring Metrics Publisher", ["Microsoft.Insights/Telemetry/Write"]),
    "4fc6c259-987e-4a07-842e-c321cc9d413f": ("IoT Hub Data Contributor", ["Microsoft.Devices/IotHubs/*"]),
    "b447c946-2db7-41ec-983d-d8bf3b1c77e3": ("IoT Hub Data Reader", ["Microsoft.Devices/IotHubs/*/read"]),
    "494bdba2-168f-4f31-a0a1-191d2f7c028c": ("IoT Hub Twin Contributor", ["Microsoft.Devices/IotHubs/twins/*"]),
    "4ea46cd5-c1b2-4a8e-910b-273211f9ce47": ("IoT Hub Registry Contributor", ["Microsoft.Devices/IotHubs/devices/*"]),
    # "Azure built-in roles for Internet of Things": dataActions Microsoft.Devices/provisioningServices/*.
    "dfce44e4-17b7-4bd1-a6d1-04996ec95633": ("Device Provisioning Service Data Contributor", [
        "Microsoft.Devices/provisioningServices/*"]),
    "09976791-48a7-449e-bb21-39d1a415f350": ("Communication and Email Service Owner", [
        "Microsoft.Communication/CommunicationServices/*", "Microsoft.Communication/EmailServices/*"]),
}

_BLOB = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
_QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues/messages"
_VAULT = "Microsoft.KeyVault/vaults"
_HUB = "Microsoft.Devices/IotHubs"
_DPS = "Microsoft.Devices/provisioningServices"
# SDK method -> (scope resource type, data action).
OPERATIONS = {
    "download_blob": ("Microsoft.Storage/storageAccounts", f"{_BLOB}/read"),
    "get_blob_properties": ("Microsoft.Storage/storageAccounts", f"{_BLOB}/read"),
    "upload_blob": ("Microsoft.Storage/storageAccounts", f"{_BLOB}/write"),
    # twin_setup/offload.py: the key that signs configuration links ("Get User Delegation Key": account scope).
    "get_user_delegation_key": ("Microsoft.Storage/storageAccounts",
                                "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"),
    "send_message": ("Microsoft.Storage/storageAccounts", f"{_QUEUE}/add/action"),
    "receive_messages": ("Microsoft.Storage/storageAccounts", f"{_QUEUE}/read"),
    "get_secret": ("Microsoft.KeyVault/vaults", f"{_VAULT}/secrets/getSecret/action"),
    "set_secret": ("Microsoft.KeyVault/vaults", f"{_VAULT}/secrets/setSecret/action"),
    "get_certificate": ("Microsoft.KeyVault/vaults", f"{_VAULT}/certificates/read"),
    "get_key": ("Microsoft.KeyVault/vaults", f"{_VAULT}/keys/read"),
    "sign": ("Microsoft.KeyVault/vaults", f"{_VAULT}/keys/sign/action"),
    "get_device_registry_statistics": ("Microsoft.Devices/IotHubs", f"{_HUB}/statistics/read"),
    "get_service_statistics": ("Microsoft.Devices/IotHubs", f"{_HUB}/statistics/read"),
    "get_device": ("Microsoft.Devices/IotHubs", f"{_HUB}/devices/read"),
    "create_or_update_identity": ("Microsoft.Devices/IotHubs", f"{_HUB}/devices/write"),
    "update_device_with_certificate_authority": ("Microsoft.Devices/IotHubs", f"{_HUB}/devices/write"),
    "delete_device": ("Microsoft.Devices/IotHubs", f"{_HUB}/devices/delete"),
    "get_twin": ("Microsoft.Devices/IotHubs", f"{_HUB}/twins/read"),
    "query_iot_hub": ("Microsoft.Devices/IotHubs", f"{_HUB}/twins/read"),
    "update_twin": ("Microsoft.Devices/IotHubs", f"{_HUB}/twins/write"),
    "replace_twin": ("Microsoft.Devices/IotHubs", f"{_HUB}/twins/write"),
    "apply_on_edge_device": ("Microsoft.Devices/IotHubs", f"{_HUB}/configurations/applyToEdgeDevice/action"),
    # shared/dps.py (the DPS service API, "Control access to DPS by using Microsoft Entra ID", data actions):
    # disallow_many reads, creates or updates individual enrollments; allow (the CLI) deletes one.
    "disallow_many": (_DPS, f"{_DPS}/enrollments/write"),
    "begin_send": ("Microsoft.Communication/communicationServices",
                   "Microsoft.Communication/CommunicationServices/Write"),
}


def param_default(name: str):
    return RBAC.parameters[name]["default"]


def evaluate(value, bindings: dict):
    """A tiny evaluator for the expressions rbac.bicep uses (default parameters, no deployment values)."""
    if isinstance(value, str):
        if value in bindings:
            return bindings[value]
        if value in RBAC.variables:
            return evaluate(RBAC.variables[value]["value"], bindings)
        if value in RBAC.parameters:
            return param_default(value)
        return value
    if isinstance(value, list):
        return [evaluate(v, bindings) for v in value]
    if isinstance(value, dict) and "operator" in value:
        op = value["operator"]
        operands = op["operands"]
        if op["type"] == "property_accessor":
            return evaluate(operands["operand_1"], bindings)[operands["operand_2"]]
        if op["type"] == "conditional":
            branch = "true_value" if evaluate(operands["condition"], bindings) else "false_value"
            return evaluate(operands[branch], bindings)
        if op["type"] == "not":
            return not evaluate(operands["bool_value"], bindings)
        if op["type"] == "index_accessor":
            return evaluate(operands["operand_1"], bindings)
    if isinstance(value, dict) and "function" in value:
        fn = value["function"]
        if fn["type"] == "empty":
            return not evaluate(fn["parameters"]["item_to_test"], bindings)
        if fn["type"] == "subscription_resource_id":
            return evaluate(fn["parameters"]["resource_name_1"], bindings)
    if isinstance(value, dict):
        return {k: evaluate(v, bindings) for k, v in value.items()}
    return value


def assignments(principal: str, overrides: dict | None = None) -> list[tuple[str, str]]:
    """(scope resource type, role id) of every role assignment to `principal` with default parameters."""
    defaults = {name: p["default"] for name, p in RBAC.parameters.items() if p.get("default") is not None}
    # Deployment values the defaults cannot give: two hubs, and e-mail enabled (the code can send e-mail).
    defaults.update({"hubNames": ["hub-a", "hub-b"], "systemTopicPrincipalIds": ["topic-a", "topic-b"],
                     "communicationServiceName": "acs-x", "dpsName": "provs-x"})
    defaults.update(overrides or {})
    found = []
    for resource in RBAC.resources_of_type("Microsoft.Authorization/roleAssignments").values():
        config = resource["config"]
        loop = config.get("loop_type")
        condition = config.get("condition")
        decl = body(resource)
        if decl["properties"]["principalId"] != principal:
            continue
        if condition is not None and not evaluate(condition, defaults):
            continue
        items = [None]
        item_name = None
        if loop:
            detail = loop["detail"]
            item_name = detail["item_name"]
            items = evaluate(detail["array_name"], defaults)
        for item in items:
            bindings = dict(defaults)
            if item_name:
                bindings[item_name] = item
            role = evaluate(decl["properties"]["roleDefinitionId"], bindings)
            scope = decl["scope"]
            symbol = scope["operator"]["operands"]["operand_1"] if isinstance(scope, dict) else scope
            found.append((RBAC.resources[symbol]["type"], role))
    return found


def deploy_script_assignments() -> list[tuple[str, str]]:
    """Role assignments infra/deploy.sh makes for the function app (ARM cannot: the scope must exist first): Key
    Vault Crypto User on each CA key (.../vaults/{vault}/keys/intermediate-ca-{region}), counted at the vault."""
    text = (REPO / "infra" / "deploy.sh").read_text()
    role = re.search(r'readonly KEY_VAULT_CRYPTO_USER_ROLE="([0-9a-f-]+)"', text).group(1)
    create = re.search(r'az role assignment create --assignee-object-id "\$\{FUNCTION_PRINCIPAL_ID[^"]*"[^\n]*\n'
                       r'\s*--assignee-principal-type ServicePrincipal --role "\$\{KEY_VAULT_CRYPTO_USER_ROLE\}" '
                       r'--scope "\$\{scope\}"', text)
    assert create and '/vaults/${AZURE_KEY_VAULT_NAME}/keys/${ca}"' in text
    return [("Microsoft.KeyVault/vaults", role)]


def covered(scope_type: str, action: str, granted: list[tuple[str, str]]) -> list[str]:
    roles = []
    for granted_scope, role in granted:
        name, actions = ROLES[role]
        same_scope = granted_scope.lower() == scope_type.lower() or (
            scope_type.startswith("Microsoft.Storage") and granted_scope.startswith("Microsoft.Storage"))
        if same_scope and any(fnmatch(action.lower(), pattern.lower()) for pattern in actions):
            roles.append(name)
    return roles


def code_operations() -> dict[str, tuple[str, str]]:
    called = method_calls().names
    operations = {m: OPERATIONS[m] for m in called if m in OPERATIONS}
    for name, spec in functions().items():
        if spec.trigger_type == "queueTrigger":
            operations[f"queue trigger {name}"] = ("Microsoft.Storage/storageAccounts", f"{_QUEUE}/process/action")
    return operations


def test_every_role_id_is_a_known_built_in_role():
    unknown = set(RBAC.resolve("roles").values()) - set(ROLES)
    assert not unknown


@pytest.mark.parametrize(("operation", "need"), sorted(code_operations().items()))
def test_function_roles_cover_every_operation_of_the_code(operation, need):
    granted = assignments("functionPrincipalId") + deploy_script_assignments()
    scope_type, action = need
    roles = covered(scope_type, action, granted)
    places = method_calls().places.get(operation, [])[:2]
    assert roles, f"{operation} ({places}) needs {action} on {scope_type}; no assigned role grants it"


def test_function_roles_without_edge_deployments_still_cover_everything_but_edge():
    granted = assignments("functionPrincipalId", {"enableEdgeDeployments": False}) + deploy_script_assignments()
    for operation, (scope_type, action) in code_operations().items():
        if action.endswith("applyToEdgeDevice/action"):
            assert not covered(scope_type, action, granted)
        else:
            assert covered(scope_type, action, granted), operation


def test_the_app_signs_only_with_the_ca_keys():
    # No signing role at the vault (every key); deploy.sh grants it on each CA key once the key exists.
    crypto_user = "12338af0-0e69-4776-bea7-57ae8d297424"
    assert ("Microsoft.KeyVault/vaults", crypto_user) not in assignments("functionPrincipalId")
    assert deploy_script_assignments() == [("Microsoft.KeyVault/vaults", crypto_user)]
    assert ROLES[crypto_user][0] == "Key Vault Crypto User"


def test_no_control_plane_roles_for_the_app():
    granted = {ROLES[role][0] for _, role in assignments("functionPrincipalId")}
    assert not granted & {"Owner", "Contributor", "User Access Administrator", "Key Vault Administrator"}


def test_telemetry_with_local_auth_disabled_has_its_publisher_role():
    assert ("Microsoft.Insights/components", "3913510d-42f4-4e42-8a64-420c390055eb") in assignments(
        "functionPrincipalId")


def test_event_grid_dead_letters_with_its_own_identity_on_one_container():
    granted = assignments("topicPrincipalId")
    assert granted == [("Microsoft.Storage/storageAccounts/blobServices/containers",
                        "ba92f5b4-2d11-453d-a403-e96b0029c9fe")] * 2


def test_deployer_gets_what_deploy_sh_needs_when_a_principal_is_given():
    granted = assignments("deployerPrincipalId", {"deployerPrincipalId": "x"})
    assert {ROLES[role][0] for _, role in granted} == {
        "Storage Blob Data Contributor", "Storage Blob Data Reader", "Key Vault Certificates Officer"}
    # Reading the CRLs (publish_first_crls: crl/{ca}.crl exists?) on the crl container alone.
    container = "Microsoft.Storage/storageAccounts/blobServices/containers"
    assert (container, "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1") in granted
    assert assignments("deployerPrincipalId") == []


def test_no_secret_role_anywhere_the_crls_are_blobs():
    # The product reads and writes no Key Vault secret (the CRLs moved to Blob Storage), so neither the app nor the
    # deployer holds a secrets role at the vault; Certificate User's getSecret is the certificate's own.
    secret_roles = {"Key Vault Secrets Officer", "Key Vault Secrets User"}
    for principal, overrides in (("functionPrincipalId", {}), ("deployerPrincipalId", {"deployerPrincipalId": "x"})):
        assert not {ROLES[role][0] for _, role in assignments(principal, overrides)} & secret_roles
    assert not {"get_secret", "set_secret"} & method_calls().names


def test_the_app_may_write_dps_enrollments_on_its_dps_only():
    granted = assignments("functionPrincipalId")
    assert ("Microsoft.Devices/provisioningServices", "dfce44e4-17b7-4bd1-a6d1-04996ec95633") in granted
    assert covered(_DPS, f"{_DPS}/enrollments/delete", granted) == ["Device Provisioning Service Data Contributor"]
