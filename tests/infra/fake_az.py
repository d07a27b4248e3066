"""A recording, stateful stand-in for `az`, `sqlcmd` and `azd`, so infra/deploy.sh runs offline.

Installed on PATH by tests/infra/conftest.py as shims (`az`, `sqlcmd`, and `azd` when a test asks for it) that call
`python fake_az.py <tool> <args...>`.

`az` command lines go through an argparse parser built the way the real CLI builds its own (azure-cli's knack
parser is argparse): one subparser per command path that deploy.sh issues, with the real option names and
aliases, `nargs`, required options and choices (case-insensitive, like azure-cli's enum types). COMMANDS below
cites where each command's options are defined. So the mistakes the real CLI refuses fail here the same way, as
"ERROR: <argparse message>" on stderr and exit code 2: an unknown or misspelt option ("unrecognized arguments"),
a missing required option ("the following arguments are required"), a value outside the choices, a command path
the fake does not know. And a value the real parser would take differently from what the script meant shows in
the parsed values: `--iot-hubs "h1 h2 h3"` is ONE value of a nargs='+' option, so one linked-hub entry.
Options a real command has but deploy.sh does not use are left out: add one here, from the cited source, when the
script starts to use it (the opt-in tests/infra/test_real_az_cli.py compares the core commands with the real CLI).

Every invocation is appended to $FAKE_AZ_LOG as one JSON line: {"tool", "argv"} and, for az, either "command" and
"args" (the parsed options, dest -> value, e.g. "iot_hubs": [three host names]) or "error" and "exit" (2) when the
parser refused it. The simulated subscription lives in $FAKE_AZ_STATE (JSON), so a second run of the script sees
what the first one created. With FAKE_AZ_PARSE_ONLY=1 a command is parsed and recorded, and nothing else happens.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from pathlib import Path

TOKEN = "tok42"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
PRINCIPAL = "11111111-1111-1111-1111-111111111111"
FUNCTION_PRINCIPAL = "22222222-2222-2222-2222-222222222222"
REGIONS = ("west", "central", "east")
LINKED_HUBS = tuple(f"iot-{region}-{TOKEN}.azure-devices.net" for region in REGIONS)
OUTPUT_ORDER_RE = re.compile(r"^properties\.outputs\.\[(.*)\]$")


class Fail(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# --- the az parser ------------------------------------------------------------------------------------------------

class ParseError(Exception):
    """What the real CLI reports as `ERROR: <message>` with exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ParseError(message)


class ThreeState(argparse.Action):
    """azure-cli's get_three_state_flag(): `--flag`, `--flag true` or `--flag false` (nargs='?'), stored as a bool."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values == "true")


def value(*flags: str, required: bool = False) -> tuple:
    return flags, {"required": required}


def enum(*flags: str, choices: tuple[str, ...], required: bool = False) -> tuple:
    """azure-cli's get_enum_type(): case-insensitive choices, the value kept in the choice's own spelling."""
    canonical = {choice.lower(): choice for choice in choices}
    return flags, {"required": required, "choices": choices, "type": lambda v: canonical.get(v.lower(), v)}


def three_state(*flags: str) -> tuple:
    """get_three_state_flag() in azure-cli src/azure-cli-core/azure/cli/core/commands/parameters.py: nargs='?'."""
    return flags, {"action": ThreeState, "nargs": "?", "const": "true", "choices": ("true", "false"),
                   "type": str.lower}


def switch(*flags: str) -> tuple:
    return flags, {"action": "store_true"}


def values(*flags: str, action: str = "store", nargs: str = "+", choices: tuple[str, ...] | None = None) -> tuple:
    return flags, {"action": action, "nargs": nargs, "choices": choices}


# knack's global arguments, on every command: --query (knack/query.py), --output/-o (knack/output.py),
# --only-show-errors, --debug, --verbose (knack/log.py).
GLOBAL = [
    value("--query"),
    enum("--output", "-o", choices=("json", "jsonc", "yaml", "yamlc", "table", "tsv", "none")),
    switch("--only-show-errors"), switch("--debug"), switch("--verbose"),
]

# Where the options are defined. azure-cli: Azure/azure-cli, src/azure-cli/azure/cli/command_modules/<module>/
# _params.py (required-ness from the command function's signature in custom.py); checked against the parser of
# azure-cli 2.91.0. azure-iot: Azure/azure-iot-cli-extension azext_iot/_params.py, contexts "iot dps" and
# "iot dps enrollment-group", required-ness from azext_iot/operations/dps.py (checked against v0.25.0).
# Every option takes one value (nargs None) except, by source:
#   --iot-hubs             nargs='+', action='extend'   azext_iot/_params.py, context "iot dps" (azure-iot >= 0.24.0)
#   --parameters           nargs='+', action='append'   command_modules/resource/_params.py, deployment_parameters_type
#   --exclude-change-types nargs='+'                     command_modules/resource/_params.py (what-if change types)
#   --headers, --uri-parameters nargs='+'                command_modules/util/_params.py ("rest")
#   --metadata             nargs='+'                     command_modules/storage/_params.py
#   --ids                  nargs='+'                     src/azure-cli-core/azure/cli/core/commands/arm.py (id params)
#   --tags (Key Vault, blob) nargs='*'                   src/azure-cli-core/azure/cli/core/commands/parameters.py
#                                                        tags_type; the DPS --tags (initial twin tags) takes one
#   three-state flags      nargs='?'                     get_three_state_flag(), same parameters.py
#   switches               nargs=0 (store_true)          each command's _params.py; knack/log.py for the globals
AZ_CLI = "azure-cli command_modules/{}/_params.py"
AZURE_IOT = "azure-iot azext_iot/_params.py"
EXTENSION = "azure-iot"  # the commands of the azure-iot extension (not in the azure-cli package)

GROUP_ID = value("--enrollment-id", "--eid", "--group-id", "--gid", required=True)
DPS_TARGET = [value("--dps-name", "-n"), value("--resource-group", "-g"), value("--login", "-l"),
              enum("--auth-type", choices=("key", "login"))]
# "iot dps" context: --iot-hubs is nargs='+' with action='extend' since azure-iot 0.24.0 (commit 57a9f85b,
# "ensure IoT Hub list persists over DPS enrollment (group) updates"); operations/dps.py splits only a plain str
# (`iot_hubs.split() if isinstance(iot_hubs, str) else iot_hubs`), so a list of one quoted word stays one hub.
ALLOCATION = [
    enum("--allocation-policy", "--ap", choices=("hashed", "geoLatency", "static", "custom")),
    values("--iot-hubs", "--ih", action="extend"),
    value("--webhook-url", "--wh"), value("--api-version", "--av"),
    value("--iot-hub-host-name", "--hn"),  # deprecated, redirect to --iot-hubs
]
ENROLLMENT_GROUP = [
    GROUP_ID, *DPS_TARGET, *ALLOCATION,
    value("--certificate-path", "--cp"), value("--secondary-certificate-path", "--scp"),
    value("--root-ca-name", "--ca-name", "--cn"), value("--secondary-root-ca-name", "--secondary-ca-name", "--scn"),
    value("--primary-key", "--pk"), value("--secondary-key", "--sk"),
    value("--initial-twin-tags", "--tags"), value("--initial-twin-properties", "--props"),
    enum("--provisioning-status", "--ps", choices=("disabled", "enabled")),
    enum("--reprovision-policy", "--rp", choices=("reprovisionandmigratedata", "reprovisionandresetdata", "never")),
    three_state("--edge-enabled", "--ee"),
]
DEPLOYMENT_SUB = [
    value("--name", "-n"), value("--location", "-l", required=True), value("--template-file", "-f"),
    value("--template-uri", "-u"), value("--template-spec", "-s"), value("--query-string", "-q"),
    values("--parameters", "-p", action="append"),  # deployment_parameters_type: action='append', nargs='+'
    enum("--validation-level", choices=("Template", "Provider", "ProviderNoRbac")),
    three_state("--no-prompt"),
]
CHANGE_TYPES = ("Create", "Delete", "Ignore", "Deploy", "NoChange", "Modify", "Unsupported")
KV_ITEM = [value("--vault-name"), value("--name", "-n"), value("--version", "-v"), value("--id")]
KV_PENDING = [value("--vault-name", required=True), value("--name", "-n", required=True)]
DPS_CERT = [value("--dps-name", required=True), value("--certificate-name", "--name", "-n", required=True),
            value("--resource-group", "-g")]
FUNCTION_APP = [value("--resource-group", "-g", required=True), value("--name", "-n", required=True),
                value("--slot", "-s")]
BLOB = [value("--account-name"), value("--account-key"), value("--connection-string"), value("--sas-token"),
        value("--blob-endpoint"), enum("--auth-mode", choices=("login", "key")), value("--blob-url"),
        value("--container-name", "-c"), value("--name", "-n"), value("--timeout")]

# role/_params.py, context "role assignment": --role, --scope, --assignee, --assignee-object-id. Context "role
# assignment create": --assignee-principal-type get_enum_type(User, Group, ServicePrincipal, ForeignGroup). Context
# "role assignment list": --fill-principal-name and --fill-role-definition-name get_three_state_flag(). Required:
# role and scope for create (create_role_assignment(cmd, role, scope, ...) in role/custom.py), none for list.
ROLE_ASSIGNMENT = [value("--role"), value("--scope"), value("--assignee"), value("--assignee-object-id")]

# command path -> (source of its option definitions, options)
COMMANDS: dict[str, tuple[str, list[tuple]]] = {
    "account show": (AZ_CLI.format("profile"), [value("--subscription", "-s", "--name", "-n")]),
    "extension show": (AZ_CLI.format("extension"), [value("--name", "-n", required=True)]),
    "ad signed-in-user show": (AZ_CLI.format("role"), []),
    "ad sp show": (AZ_CLI.format("role"), [value("--id", required=True)]),
    "deployment sub show": (AZ_CLI.format("resource"), [value("--name", "-n", required=True)]),
    "deployment sub what-if": (AZ_CLI.format("resource"), [
        *DEPLOYMENT_SUB, switch("--no-pretty-print"),
        enum("--result-format", "-r", choices=("ResourceIdOnly", "FullResourcePayloads")),
        values("--exclude-change-types", "-x", choices=CHANGE_TYPES)]),
    "deployment sub create": (AZ_CLI.format("resource"), [
        *DEPLOYMENT_SUB, switch("--what-if", "-w"), switch("--confirm-with-what-if", "-c"),
        switch("--proceed-if-no-change"), switch("--no-wait")]),
    "storage account check-name": (AZ_CLI.format("storage"), [value("--name", "-n", required=True)]),
    "keyvault list-deleted": (AZ_CLI.format("keyvault"), [value("--resource-type")]),
    # util/_params.py: --method get_enum_type, --headers and --uri-parameters nargs='+'.
    "rest": (AZ_CLI.format("util"), [
        value("--url", "--uri", "-u", required=True),
        enum("--method", "-m", choices=("head", "get", "put", "post", "delete", "options", "patch")),
        values("--headers"), values("--uri-parameters", "--url-parameters"), value("--body", "-b"),
        switch("--skip-authorization-header"), value("--resource"), value("--output-file")]),
    "functionapp deployment source config-zip": (AZ_CLI.format("appservice"), [
        value("--resource-group", "-g"), value("--name", "-n"), value("--slot", "-s"), values("--ids"),
        value("--src", required=True), three_state("--build-remote"), value("--timeout", "-t")]),
    "functionapp function list": (AZ_CLI.format("appservice"), FUNCTION_APP[:2]),
    "functionapp function keys list": (AZ_CLI.format("appservice"), [
        *FUNCTION_APP, value("--function-name", required=True)]),
    "functionapp keys list": (AZ_CLI.format("appservice"), FUNCTION_APP),
    "sql server firewall-rule create": (AZ_CLI.format("sql"), [
        value("--resource-group", "-g", required=True), value("--server", "-s", required=True),
        value("--name", "-n", required=True), value("--start-ip-address"), value("--end-ip-address")]),
    "sql server firewall-rule delete": (AZ_CLI.format("sql"), [
        value("--resource-group", "-g"), value("--server", "-s"), value("--name", "-n"), values("--ids")]),
    "storage blob exists": (AZ_CLI.format("storage"), [*BLOB, value("--snapshot")]),
    "storage blob upload": (AZ_CLI.format("storage"), [
        *BLOB, value("--file", "-f"), enum("--type", "-t", choices=("block", "page", "append")),
        three_state("--overwrite"), value("--content-type"), switch("--no-progress"), switch("--validate-content"),
        values("--metadata"), values("--tags", nargs="*"), value("--tier")]),
    "keyvault certificate show": (AZ_CLI.format("keyvault"), KV_ITEM),
    "keyvault certificate pending show": (AZ_CLI.format("keyvault"), KV_PENDING),
    "keyvault certificate create": (AZ_CLI.format("keyvault"), [
        *KV_PENDING, value("--policy", "-p", required=True), three_state("--disabled"), values("--tags", nargs="*"),
        value("--validity")]),
    "keyvault certificate pending merge": (AZ_CLI.format("keyvault"), [
        *KV_PENDING, value("--file", "-f", required=True), three_state("--disabled"), values("--tags", nargs="*")]),
    "keyvault certificate download": (AZ_CLI.format("keyvault"), [
        *KV_ITEM, value("--file", "-f", required=True), enum("--encoding", "-e", choices=("PEM", "DER"))]),
    # The DPS CA certificate commands are azure-cli's own (command_modules/iot), not the extension's.
    "iot dps certificate show": (AZ_CLI.format("iot"), DPS_CERT),
    "iot dps certificate create": (AZ_CLI.format("iot"), [
        *DPS_CERT, value("--path", "-p", required=True), three_state("--verified", "-v")]),
    "iot dps certificate update": (AZ_CLI.format("iot"), [
        *DPS_CERT, value("--path", "-p", required=True), value("--etag", "-e", required=True),
        three_state("--verified", "-v")]),
    "role assignment list": (AZ_CLI.format("role"), [
        *ROLE_ASSIGNMENT, value("--resource-group", "-g"), switch("--include-inherited"), switch("--all"),
        switch("--include-groups"), three_state("--fill-principal-name"), three_state("--fill-role-definition-name")]),
    "role assignment create": (AZ_CLI.format("role"), [
        value("--role", required=True), value("--scope", required=True), value("--assignee"),
        value("--assignee-object-id"),
        enum("--assignee-principal-type", choices=("User", "Group", "ServicePrincipal", "ForeignGroup")),
        value("--description"), value("--condition"), value("--condition-version"), value("--name", "-n")]),
    "iot dps enrollment-group show": (AZURE_IOT, [GROUP_ID, *DPS_TARGET, three_state("--show-keys", "--keys")]),
    "iot dps enrollment-group create": (AZURE_IOT, ENROLLMENT_GROUP),
    "iot dps enrollment-group update": (AZURE_IOT, [
        *ENROLLMENT_GROUP, value("--etag", "-e"), three_state("--remove-certificate", "--rc"),
        three_state("--remove-secondary-certificate", "--rsc")]),
}


def from_extension(command: str) -> bool:
    """A command of the azure-iot extension, which azure-cli (PyPI) does not have."""
    return COMMANDS[command][0].startswith(EXTENSION)


def command_parser(command: str) -> Parser:
    """The parser of one command path, as azure-cli builds only the subparser of the command it was given."""
    _source, options = COMMANDS[command]
    parser = Parser(prog=f"az {command}", argument_default=argparse.SUPPRESS)
    for flags, kwargs in (*options, *GLOBAL):
        parser.add_argument(*flags, **kwargs)
    return parser


def parse_az(argv: list[str]) -> tuple[str, dict]:
    """The command path and the options given (dest -> value), or ParseError as the real CLI would refuse."""
    words = []
    for arg in argv:  # the command is the words before the first option, as azure-cli's invoker reads it
        if arg.startswith("-"):
            break
        words.append(arg)
    command = " ".join(words)
    if command not in COMMANDS:
        raise ParseError(f"'{command}' is misspelled or not recognized by the system (or not modelled by the fake)")
    return command, vars(command_parser(command).parse_args(argv[len(words):]))


# --- the simulated subscription -----------------------------------------------------------------------------------

def load_state() -> dict:
    path = Path(os.environ["FAKE_AZ_STATE"])
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(state: dict) -> None:
    Path(os.environ["FAKE_AZ_STATE"]).write_text(json.dumps(state, indent=1, sort_keys=True))


def record(entry: dict) -> None:
    with open(os.environ["FAKE_AZ_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


def split(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """sqlcmd's arguments: command words, then options (each option keeps every value that follows it)."""
    words: list[str] = []
    options: dict[str, list[str]] = {}
    current = None
    for arg in argv:
        if arg.startswith("-") and not re.fullmatch(r"-?\d+", arg):
            current = arg
            options.setdefault(current, [])
        elif current is None:
            words.append(arg)
        else:
            options[current].append(arg)
    return words, options


def opt(options: dict, *names: str, default: str | None = None) -> str | None:
    for name in names:
        if options.get(name):
            return options[name][0]
        if name in options:
            return ""
    return default


def outputs_for(params: dict[str, str]) -> dict[str, str]:
    env = params["environmentName"]
    app = f"func-{TOKEN}"
    return {
        "AZURE_LOCATION": params["location"],
        "AZURE_RESOURCE_GROUP": params.get("resourceGroupName") or f"rg-{env}",
        "AZURE_FUNCTION_APP_NAME": app,
        "SERVICE_ONBOARDING_BASE_URL": f"https://{app}.azurewebsites.net",
        "FUNCTION_PRINCIPAL_ID": FUNCTION_PRINCIPAL,
        "AZURE_STORAGE_ACCOUNT_NAME": f"st{TOKEN}",
        "TEMPLATES_CONTAINER": "sensor-configurations",
        "CRL_CONTAINER": "crl",
        "AZURE_KEY_VAULT_NAME": f"kv-{TOKEN}",
        "AZURE_SQL_SERVER_NAME": f"sql-{TOKEN}",
        "AZURE_SQL_SERVER_FQDN": f"sql-{TOKEN}.database.windows.net",
        "AZURE_SQL_DATABASE_NAME": "sqldb-onboarding",
        "AZURE_DPS_NAME": f"provs-{TOKEN}",
        "REGIONS": ",".join(REGIONS),
        "IOT_HUB_HOSTNAMES": ",".join(LINKED_HUBS),
        "DEVICE_CREATED_SUBSCRIBED": "True" if params.get("subscribeDeviceCreated") == "true" else "False",
        "AZURE_VNET_NAME": f"vnet-{TOKEN}" if params.get("vnetEnabled") == "true" else "",
    }


def tsv_outputs(outputs: dict[str, str], query: str | None) -> str:
    match = OUTPUT_ORDER_RE.match(query or "")
    if not match:
        raise Fail(f"fake az: unsupported outputs query {query!r}", 99)
    names = [field.strip().removesuffix(".value") for field in match.group(1).split(",")]
    return "\t".join(outputs.get(name, "None") for name in names)


def parameters(args: dict) -> dict[str, str]:
    params = {}
    for group in args.get("parameters", []):  # action='append', nargs='+': one list per --parameters
        for item in group:
            key, sep, val = item.partition("=")
            if not sep:
                raise Fail(f"fake az: parameter without '=': {item!r}", 99)
            params[key] = val
    return params


def planned_changes(state: dict, params: dict[str, str]) -> list[tuple[str, str]]:
    rg = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-{params['environmentName']}"
    top = [
        ("Microsoft.Storage/storageAccounts", f"st{TOKEN}"),
        ("Microsoft.KeyVault/vaults", f"kv-{TOKEN}"),
        ("Microsoft.Web/sites", f"func-{TOKEN}"),
        ("Microsoft.Sql/servers", f"sql-{TOKEN}"),
        ("Microsoft.Devices/IotHubs", f"iot-west-{TOKEN}"),
        ("Microsoft.Devices/provisioningServices", f"provs-{TOKEN}"),
    ]
    exists = bool(state.get("deployments"))
    kind = "NoChange" if exists else "Create"
    rows = [("Modify" if exists else "Create", rg)]
    rows += [(kind, f"{rg}/providers/{t}/{n}") for t, n in top]
    rows.append((kind, f"{rg}/providers/Microsoft.Storage/storageAccounts/st{TOKEN}/blobServices/default"))
    rows.append((kind, f"{rg}/providers/Microsoft.Storage/storageAccounts/st{TOKEN}/providers/"
                       "Microsoft.Authorization/roleAssignments/0000-role"))
    return rows


def rest(state: dict, args: dict) -> str:
    method = args.get("method", "get").lower()
    url = args["url"]
    query = args.get("query")
    if "checkNameAvailability" in url or "checknameavailability" in url or "NameAvailability" in url:
        body = json.loads(args.get("body", "{}"))
        available = body["name"] not in state.get("taken_names", [])
        field = query or "nameAvailable"
        if field not in ("nameAvailable", "available"):
            raise Fail(f"fake az: unexpected query {field!r}", 99)
        return "true" if available else "false"
    if url.endswith("/api/health") and method == "get":
        if not args.get("skip_authorization_header"):
            raise Fail("fake az: the health check must skip the ARM authorization header", 99)
        return "ok" if query == "status" else json.dumps({"status": "ok", "components": {}})
    if url.endswith("/admin/functions/refresh_crls") and method == "post":
        if "x-functions-key=master-key" not in args.get("headers", []):
            raise Fail("fake az: admin call without the master key", 99)
        # The app's refresh_crls publishes the CRL of every CA in Key Vault to the blob {ca}.crl of the crl container.
        crls = state.setdefault("blobs", {}).setdefault("crl", [])
        for name, status in state.get("kv_certs", {}).items():
            if status == "complete" and f"{name}.crl" not in crls:
                crls.append(f"{name}.crl")
        return ""
    raise Fail(f"fake az rest: unmodelled {method} {url}", 99)


def enrollment_group(state: dict, command: str, args: dict) -> str:
    group_id = args["enrollment_id"]
    groups = state.setdefault("enrollment_groups", {})
    if args.get("allocation_policy") != "custom":
        raise Fail("fake az: enrollment groups use custom allocation", 99)
    url = args.get("webhook_url", "")
    if not re.fullmatch(r"https://[^/]+/api/allocate\?code=.+", url) or not args.get("api_version"):
        raise Fail(f"fake az: bad webhook {url!r}", 99)
    if command.endswith("create"):
        ca = args.get("root_ca_name")
        if not state.get("dps_certs", {}).get(ca):
            raise Fail(f"fake az: {ca} is not a verified DPS certificate", 99)
    elif group_id not in groups:
        raise Fail("EnrollmentGroupNotFound", 3)
    # Without --iot-hubs an update keeps the group's list (azure-iot >= 0.24.0); each value is one hub entry.
    hubs = args.get("iot_hubs", groups.get(group_id, {}).get("iotHubs"))
    if not hubs:
        raise Fail("fake az: enrollment groups allocate among the DPS's linked hubs: give --iot-hubs", 99)
    unknown = [hub for hub in hubs if hub not in LINKED_HUBS]
    if unknown:
        raise Fail(f"fake az: DPS has no linked IoT hub {unknown!r} (--iot-hubs takes one host name per value; "
                   f"linked: {', '.join(LINKED_HUBS)})", 99)
    groups[group_id] = {"webhookUrl": url, "apiVersion": args["api_version"], "iotHubs": list(hubs)}
    return ""


def handle_az(state: dict, command: str, args: dict) -> str:
    query = args.get("query")
    if command == "account show":
        if not state.get("logged_in", True):
            raise Fail("Please run 'az login' to setup account.")
        return f"{SUBSCRIPTION}\toperator@example.com\t{state.get('principal_kind', 'user')}"
    if command == "extension show":
        if args["name"] in state.get("extensions", ["azure-iot"]):
            return state.get("azure_iot_version", "0.25.0")
        raise Fail("The extension azure-iot is not installed.")
    if command == "ad signed-in-user show":
        return PRINCIPAL
    if command == "ad sp show":
        return PRINCIPAL if args["id"] == "operator@example.com" and query == "id" else ""
    if command == "deployment sub show":
        deployment = state.get("deployments", {}).get(args["name"])
        if not deployment:
            raise Fail("DeploymentNotFound", 3)
        return tsv_outputs(deployment["outputs"], query)
    if command == "deployment sub what-if":
        if not args.get("no_pretty_print") or query != "changes[].[changeType, resourceId]":
            raise Fail("fake az: what-if must be --no-pretty-print with the changes query", 99)
        params = parameters(args)
        return "\n".join(f"{kind}\t{rid}" for kind, rid in planned_changes(state, params))
    if command == "deployment sub create":
        params = parameters(args)
        template = args.get("template_file", "")
        if not template.endswith("infra/main.bicep") or not Path(template).exists():
            raise Fail(f"fake az: template {template!r} not found", 99)
        outputs = outputs_for(params)
        state.setdefault("deployments", {})[args.get("name")] = {"outputs": outputs, "params": params}
        if params.get("subscribeDeviceCreated") == "true":
            if "on_device_created" not in state.get("functions", []):
                raise Fail("Deployment failed: the function on_device_created does not exist (Event Grid endpoint "
                           "validation)")
            state["subscribed"] = True
        return tsv_outputs(outputs, query)
    if command == "storage account check-name":
        return "false" if args["name"] in state.get("taken_names", []) else "true"
    if command == "keyvault list-deleted":
        return "\n".join(state.get("deleted_vaults", []))
    if command == "rest":
        return rest(state, args)
    if command == "functionapp deployment source config-zip":
        import zipfile

        with zipfile.ZipFile(args["src"]) as zf:
            names = set(zf.namelist())
        if "function_app.py" not in names or any(n.startswith(("local/", "tests/", ".local/")) for n in names):
            raise Fail(f"fake az: bad package contents {sorted(names)[:10]}", 99)
        state["package"] = sorted(names)
        state["functions"] = [f for f in os.environ.get("FAKE_AZ_FUNCTIONS", "").split(",") if f]
        return ""
    if command == "functionapp function list":
        return "\n".join(f"{args['name']}/{name}" for name in state.get("functions", []))
    if command == "functionapp function keys list":
        if args["function_name"] != "allocate" or query != "default":
            raise Fail("fake az: unexpected function key request", 99)
        return "function-key-allocate"
    if command == "functionapp keys list":
        return "master-key"
    if command in ("sql server firewall-rule create", "sql server firewall-rule delete"):
        rules = state.setdefault("firewall_rules", [])
        name = args.get("name")
        if command.endswith("create"):
            rules.append(name)
        elif name in rules:
            rules.remove(name)
        return ""
    if command == "storage blob exists":
        if args.get("auth_mode") != "login" or query != "exists":
            raise Fail("fake az: blob exists must use --auth-mode login (no account keys) and --query exists", 99)
        blobs = state.get("blobs", {}).get(args.get("container_name"), [])
        return "true" if args.get("name") in blobs else "false"
    if command == "storage blob upload":
        if args.get("auth_mode") != "login":
            raise Fail("fake az: blob upload must use --auth-mode login (no account keys)", 99)
        json.loads(Path(args["file"]).read_text())
        state.setdefault("blobs", {}).setdefault(args.get("container_name"), []).append(args.get("name"))
        return ""
    if command == "keyvault certificate show":
        if state.get("kv_certs", {}).get(args.get("name")) == "complete":
            return "A1B2C3"
        raise Fail("CertificateNotFound", 3)
    if command == "keyvault certificate pending show":
        name = args["name"]
        if state.get("kv_certs", {}).get(name) != "pending":
            raise Fail("PendingCertificateNotFound", 3)
        if query == "status":
            return "inProgress"
        if query == "csr":
            return state.get("csr_b64", {}).get(name, base64.b64encode(b"not a real csr").decode())
        raise Fail(f"fake az: unexpected query {query!r}", 99)
    if command == "keyvault certificate create":
        policy = json.loads(Path(args["policy"].removeprefix("@")).read_text())
        key = policy["keyProperties"]
        if key["exportable"] or key["keyType"] != "EC-HSM" or policy["issuerParameters"]["name"] != "Unknown":
            raise Fail("fake az: CA key policy must be a non-exportable HSM key with an external issuer", 99)
        state.setdefault("kv_certs", {})[args["name"]] = "pending"
        state.setdefault("policies", {})[args["name"]] = policy
        return ""
    if command == "keyvault certificate pending merge":
        pem = Path(args["file"]).read_text()
        if os.environ.get("FAKE_AZ_VERIFY_CA"):
            verify_intermediate(pem)
        state.setdefault("kv_certs", {})[args["name"]] = "complete"
        return ""
    if command == "keyvault certificate download":
        if args.get("encoding") != "PEM":
            raise Fail("fake az: DPS takes the CA certificate as PEM (--encoding PEM)", 99)
        Path(args["file"]).write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        return ""
    if command == "iot dps certificate show":
        cert = state.get("dps_certs", {}).get(args["certificate_name"])
        if cert is None:
            raise Fail("CertificateNotFound", 3)
        answers = {"properties.isVerified": "true" if cert else "false", "etag": "etag-1"}
        if query not in answers:
            raise Fail(f"fake az: unexpected query {query!r}", 99)
        return answers[query]
    if command in ("iot dps certificate create", "iot dps certificate update"):
        if args.get("verified") is not True:
            raise Fail("fake az: DPS CA certificates must be registered verified", 99)
        if command.endswith("update") and args["etag"] != "etag-1":
            raise Fail("PreconditionFailed: etag mismatch", 3)
        state.setdefault("dps_certs", {})[args["certificate_name"]] = True
        return ""
    if command == "role assignment list":
        key = "|".join((args.get("assignee_object_id", ""), args.get("role", ""), args.get("scope", "")))
        return "/providers/Microsoft.Authorization/roleAssignments/x" if key in state.get("role_assignments", []) \
            and query == "[0].id" else ""
    if command == "role assignment create":
        if not args.get("assignee_object_id") or args.get("assignee_principal_type") != "ServicePrincipal":
            raise Fail("fake az: assign the function identity by object id, as a ServicePrincipal", 99)
        if not re.fullmatch(r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.KeyVault/vaults/[^/]+"
                            r"/keys/[^/]+", args["scope"]):
            raise Fail(f"fake az: unexpected role assignment scope {args['scope']!r}", 99)
        if args["scope"].rsplit("/", 1)[1] not in state.get("kv_certs", {}):
            raise Fail("ResourceNotFound: the key does not exist", 3)
        key = "|".join((args["assignee_object_id"], args["role"], args["scope"]))
        if key not in state.setdefault("role_assignments", []):
            state["role_assignments"].append(key)
        return ""
    if command == "iot dps enrollment-group show":
        group = state.get("enrollment_groups", {}).get(args["enrollment_id"])
        if group is None:
            raise Fail("EnrollmentGroupNotFound", 3)
        return group["webhookUrl"]
    if command in ("iot dps enrollment-group create", "iot dps enrollment-group update"):
        return enrollment_group(state, command, args)
    raise Fail(f"fake az: the parser knows {command!r} but no handler does", 99)


def verify_intermediate(pem: str) -> None:
    import site  # the shim starts Python with -S; cryptography lives in site-packages

    site.main()
    from cryptography import x509

    certificate = x509.load_pem_x509_certificates(pem.encode())[0]
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    if not constraints.ca or constraints.path_length != 0 or not usage.key_cert_sign or not usage.crl_sign:
        raise Fail("fake az: the merged certificate is not an intermediate CA (CA:true, pathlen 0, keyCertSign)", 99)


def create_table(tables: list[str], statement: str) -> None:
    """An unguarded CREATE TABLE, as SQL Server runs it: an existing table is an error."""
    table = re.search(r"CREATE TABLE (\w+) \(", statement).group(1)
    if table in tables:
        raise Fail(f"There is already an object named '{table}' in the database.")
    tables.append(table)


GUARDED_TABLE = re.compile(r"^IF OBJECT_ID\(N'(\w+)', N'U'\) IS NULL\n    EXEC\(N'CREATE TABLE (\w+) \(", re.M)
GUARDED_COLUMN = re.compile(r"^IF COL_LENGTH\(N'(\w+)', N'(\w+)'\) IS NULL\n"
                            r"    EXEC\(N'ALTER TABLE (\w+) ADD (\w+) ", re.M)


def run_migration(state: dict, tables: list[str], name: str, text: str) -> None:
    """One migration batch of deploy.sh: transaction, guarded statements, its schema_migrations row."""
    version = name.removeprefix("migration-").split(".")[0]
    lines = text.strip().splitlines()
    if lines[:3] != ["SET XACT_ABORT ON;", "SET NOCOUNT ON;", "BEGIN TRANSACTION;"] or lines[-1] != "COMMIT;":
        raise Fail(f"fake sqlcmd: {name} is not one transaction under XACT_ABORT", 99)
    record = re.fullmatch(r"INSERT INTO schema_migrations \(version, name, applied_at\) VALUES "
                          r"\(N'(\d{4})', N'([a-z0-9_]+)', SYSUTCDATETIME\(\)\);", lines[-2])
    if not record or record.group(1) != version:
        raise Fail(f"fake sqlcmd: {name} does not record version {version} last", 99)
    if "schema_migrations" not in tables:
        raise Fail("Invalid object name 'schema_migrations'.")
    if version in state.get("sql_migrations", []):
        raise Fail(f"Violation of PRIMARY KEY constraint: duplicate key ({version}) in schema_migrations")
    creates = re.findall(r"^(?:IF .*\n)?    EXEC\(N'CREATE TABLE (\w+)", text, re.M)
    guarded = {guard for guard, table in GUARDED_TABLE.findall(text) if guard == table}
    for table in creates:
        if table not in guarded:
            raise Fail(f"fake sqlcmd: CREATE TABLE {table} without its OBJECT_ID guard", 99)
        if table not in tables:
            tables.append(table)
            state.setdefault("sql_created", []).append(table)
    # ALTER TABLE t ADD c: SQL Server refuses a column that exists, so each must be under its COL_LENGTH guard.
    added = re.findall(r"^(?:IF .*\n)?    EXEC\(N'ALTER TABLE (\w+) ADD (?!CONSTRAINT\b)(\w+) ", text, re.M)
    guarded_columns = {(t, c) for t, c, t2, c2 in GUARDED_COLUMN.findall(text) if (t, c) == (t2, c2)}
    columns = state.setdefault("sql_columns", [])
    for table, column in added:
        if (table, column) not in guarded_columns:
            raise Fail(f"fake sqlcmd: ALTER TABLE {table} ADD {column} without its COL_LENGTH guard", 99)
        if table not in tables:
            raise Fail(f"Cannot find the object \"{table}\" because it does not exist or you do not have permissions.")
        if f"{table}.{column}" not in columns:
            columns.append(f"{table}.{column}")
    state.setdefault("sql_migrations", []).append(version)


def handle_azd(state: dict, argv: list[str]) -> str:
    """`azd env get-values --environment NAME` (azd reference: env get-values, flag -e/--environment): the azd
    environment's .env as KEY="value" lines. Nothing else is modelled."""
    parser = Parser(prog="azd env get-values")
    parser.add_argument("--environment", "-e")
    if argv[:2] != ["env", "get-values"]:
        raise Fail(f"fake azd: unmodelled {' '.join(argv)}", 99)
    args = parser.parse_args(argv[2:])
    values = state.get("azd_env", {}).get(args.environment)
    if values is None:
        raise Fail(f"environment '{args.environment}' does not exist")
    return "\n".join(f'{key}="{value}"' for key, value in values.items())


def handle_sqlcmd(state: dict, argv: list[str]) -> str:
    _words, options = split(argv)
    if opt(options, "--authentication-method") != "ActiveDirectoryDefault":
        raise Fail("fake sqlcmd: Entra authentication expected", 99)
    if state.get("sql_private"):  # public network access Disabled: no firewall rule helps
        raise Fail("Reason: An instance-specific error occurred while establishing a connection to SQL Server. "
                   "Connection was denied since Deny Public Network Access is set to Yes.")
    blocked_ip = state.get("sql_blocked_ip")
    if blocked_ip and not any(blocked_ip.replace(".", "-") in r for r in state.get("firewall_rules", [])):
        raise Fail(f"Cannot open server requested by the login. Client with IP address '{blocked_ip}' is not "
                   "allowed to access the server.")
    query = opt(options, "-Q")
    script = opt(options, "-i")
    tables = state.setdefault("sql_tables", [])
    if query:
        if "sys.tables" in query:
            match = re.search(r"name = '(\w+)'", query)
            return "1" if match and match.group(1) in tables else "0"
        if "FROM schema_migrations" in query:
            if "schema_migrations" not in tables:
                raise Fail("Invalid object name 'schema_migrations'.")
            return "\n".join(state.get("sql_migrations", []))
        return "1"
    if script:
        name = Path(script).name
        text = Path(script).read_text()
        if name == "schema_migrations.sql":
            create_table(tables, text)
        elif name.startswith("migration-"):
            run_migration(state, tables, name, text)
        elif name == "schema.sql":
            raise Fail("fake sqlcmd: schema.sql is the combined view; deploy.sh applies the migrations", 99)
        variables = dict(v.split("=", 1) for v in options.get("-v", []))
        state.setdefault("sql_scripts", []).append({"script": name, "variables": variables})
        return ""
    raise Fail("fake sqlcmd: nothing to run", 99)


def main() -> int:
    tool, argv = sys.argv[1], sys.argv[2:]
    entry: dict = {"tool": tool, "argv": argv}
    command, args = "", {}
    if tool == "az":
        try:
            command, args = parse_az(argv)
        except ParseError as error:
            record({**entry, "error": str(error), "exit": 2})
            print(f"ERROR: {error}", file=sys.stderr)
            return 2
        entry.update(command=command, args=args)
    record(entry)
    if os.environ.get("FAKE_AZ_PARSE_ONLY") == "1":
        return 0
    state = load_state()
    try:
        if tool == "az":
            out = handle_az(state, command, args)
        elif tool == "azd":
            out = handle_azd(state, argv)
        else:
            out = handle_sqlcmd(state, argv)
    except Fail as failure:
        save_state(state)
        print(f"ERROR: {failure}", file=sys.stderr)
        return failure.code
    save_state(state)
    if out:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
