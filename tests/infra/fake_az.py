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

The CA rotation of deploy.sh (--rotate-ca, --promote-ca) reads what this state keeps beside the certificates' names:
each Key Vault certificate's versions ("kv_versions": a new version with a new key, pending until its signed chain is
merged), each DPS CA certificate's thumbprint ("dps_thumbprints", SHA-1 of the uploaded certificate, as DPS shows
it), and each enrollment group's CA references ("caReferences": primary, secondary). Answers that read several
values print as `-o tsv` does (tsv(): knack's TSV output, which azure-cli uses): the query is applied to the resource's
JSON (search(): the JMESPath forms deploy.sh uses), so `--query "[a, b]"` prints one value per line and only
`--query "[[a, b]]"` one tab-separated row, as with the real CLI.

The deployment's outputs follow its parameters: hubsPerRegion=N gives N hubs per region, named as
infra/modules/iothubs.bicep names them (hub_names()), listed in IOT_HUB_HOSTNAMES and, with their regions, in
IOT_HUB_REGIONS; DPS links exactly those hubs (linked_hubs()).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
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


def hub_names(per_region: int = 1, regions: tuple[str, ...] = REGIONS) -> list[tuple[str, str]]:
    """(host name, region) of every hub, in the order of infra/modules/iothubs.bicep: the first hub of each region
    (named as before the count existed), then the second of each, ...; hub k >= 2 is iot-{region}{k}-{token}."""
    return [(f"iot-{region}{'' if k == 1 else k}-{TOKEN}.azure-devices.net", region)
            for k in range(1, per_region + 1) for region in regions]


LINKED_HUBS = tuple(host for host, _region in hub_names())


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


def outputs_for(params: dict[str, str]) -> dict[str, object]:
    env = params["environmentName"]
    app = f"func-{TOKEN}"
    hubs = hub_names(int(params.get("hubsPerRegion") or 1))
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
        "IOT_HUB_HOSTNAMES": ",".join(host for host, _region in hubs),
        "IOT_HUB_REGIONS": ",".join(f"{host}={region}" for host, region in hubs),
        "DEVICE_CREATED_SUBSCRIBED": params.get("subscribeDeviceCreated") == "true",
        "AZURE_VNET_NAME": f"vnet-{TOKEN}" if params.get("vnetEnabled") == "true" else "",
    }


def deployment_document(outputs: dict[str, object]) -> dict:
    """What `az deployment sub show/create` returns, as far as the queries read it: properties.outputs.NAME.{type,
    value}."""
    types = {bool: "Bool", int: "Int", str: "String"}
    return {"properties": {"outputs": {name: {"type": types[type(value)], "value": value}
                                       for name, value in outputs.items()}}}


def linked_hubs(state: dict) -> tuple[str, ...]:
    """The hubs DPS links: those of the latest deployment (main.bicep links every hub it makes), else the default
    three."""
    for deployment in reversed(list(state.get("deployments", {}).values())):
        hosts = deployment["outputs"].get("IOT_HUB_HOSTNAMES")
        if hosts:
            return tuple(hosts.split(","))
    return LINKED_HUBS


# --- --query and -o tsv as azure-cli does them ---------------------------------------------------------------------

def _split_top(text: str) -> list[str]:
    """The items of a multi-select list's body, split at the commas outside brackets."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    return [*items, current.strip()] if current.strip() else items


def search(document, expression: str | None):
    """JMESPath, in the forms deploy.sh's multi-value queries take: a dotted path (`properties.outputs`), a
    multi-select list (`[a, b.c]`, each item a path or a multi-select list itself, so `[[a, b]]`), or a path followed
    by one (`properties.outputs.[[A.value, B.value]]`). A missing key is null (None)."""
    if not expression:
        return document
    expression = expression.strip()
    if expression.startswith("["):
        if not expression.endswith("]"):
            raise Fail(f"fake az: unsupported query {expression!r}", 99)
        return [search(document, item) for item in _split_top(expression[1:-1])]
    head, dot, rest = expression.partition(".[")
    if dot:
        return search(search(document, head), "[" + rest)
    for key in expression.split("."):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise Fail(f"fake az: unsupported query {expression!r}", 99)
        document = document.get(key) if isinstance(document, dict) else None
    return document


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
    """create, or update as azure-iot does it (operations/dps.py, iot_dps_device_enrollment_group_update): the group
    is read, what is given changes it, the rest is kept (allocation, webhook, hubs, CA references)."""
    group_id = args["enrollment_id"]
    groups = state.setdefault("enrollment_groups", {})
    creating = command.endswith("create")
    if not creating and group_id not in groups:
        raise Fail("EnrollmentGroupNotFound", 3)
    current = {} if creating else groups[group_id]
    policy = args.get("allocation_policy", current.get("allocationPolicy", "custom" if current else None))
    url = args.get("webhook_url", current.get("webhookUrl", ""))
    api_version = args.get("api_version", current.get("apiVersion"))
    if policy != "custom":
        raise Fail("fake az: enrollment groups use custom allocation", 99)
    if not re.fullmatch(r"https://[^/]+/api/allocate\?code=.+", url) or not api_version:
        raise Fail(f"fake az: bad webhook {url!r}", 99)
    references = ca_references(state, creating, dict(current.get("caReferences") or {}), args)
    # Without --iot-hubs an update keeps the group's list (azure-iot >= 0.24.0); each value is one hub entry.
    hubs = args.get("iot_hubs", current.get("iotHubs"))
    if not hubs:
        raise Fail("fake az: enrollment groups allocate among the DPS's linked hubs: give --iot-hubs", 99)
    linked = linked_hubs(state)
    unknown = [hub for hub in hubs if hub not in linked]
    if unknown:
        raise Fail(f"fake az: DPS has no linked IoT hub {unknown!r} (--iot-hubs takes one host name per value; "
                   f"linked: {', '.join(linked)})", 99)
    groups[group_id] = {**current, "allocationPolicy": policy, "webhookUrl": url, "apiVersion": api_version,
                        "iotHubs": list(hubs), "caReferences": references}
    return ""


def ca_references(state: dict, creating: bool, references: dict, args: dict) -> dict:
    """attestation.x509.caReferences after the call: --root-ca-name (primary) and --secondary-root-ca-name; on update,
    --remove-certificate / --remove-secondary-certificate first (_get_updated_attestation_with_x509_ca_cert), and
    without a new name neither may leave the group with no CA (_can_remove_primary/secondary_certificate). DPS takes
    a reference to a verified CA certificate of its own only."""
    primary, secondary = args.get("root_ca_name"), args.get("secondary_root_ca_name")
    remove_primary, remove_secondary = args.get("remove_certificate"), args.get("remove_secondary_certificate")
    if creating:
        references = {}
    elif not (primary or secondary):
        if remove_primary and remove_secondary:
            raise Fail("Please provide at least one certificate")
        if remove_primary and not references.get("secondary"):
            raise Fail("Please provide at least one certificate while removing the only primary certificate")
        if remove_secondary and not references.get("primary"):
            raise Fail("Please provide at least one certificate while removing the only secondary certificate")
    if remove_primary:
        references.pop("primary", None)
    if remove_secondary:
        references.pop("secondary", None)
    for key, name in (("primary", primary), ("secondary", secondary)):
        if name:
            if not state.get("dps_certs", {}).get(name):
                raise Fail(f"fake az: {name} is not a verified DPS certificate", 99)
            references[key] = name
    if not references.get("primary"):
        raise Fail("fake az: the groups of deploy.sh attest with a primary CA certificate (--root-ca-name)", 99)
    return references


def tsv(result) -> str:
    """`-o tsv` of a query result as knack's format_tsv prints it (knack/output.py _TsvOutput, azure-cli's output;
    tests/infra/test_real_az_cli.py compares the two), less the final newline: a result that is not a list is one row;
    a list is one row PER ITEM, so `[a, b]` prints a and b on two lines; a row that is a list (or a dict: its values by
    sorted key) is its cells joined by tabs, where a list cell prints its length, a dict cell nothing, None as None, a
    bool as True/False; a row that is a bool prints true/false. The CLI prints nothing at all for a null result."""
    if result is None:
        return ""
    lines = []
    for row in result if isinstance(result, list) else [result]:
        if isinstance(row, (list, dict)):
            cells = row if isinstance(row, list) else [value for _, value in sorted(row.items())]
            lines.append("\t".join(str(len(c)) if isinstance(c, list) else "" if isinstance(c, dict) else str(c)
                                   for c in cells))
        else:
            lines.append(str(row).lower() if isinstance(row, bool) else str(row))
    return "\n".join(lines)


# --- Key Vault certificate versions and DPS CA certificates ------------------------------------------------------

PLACEHOLDER_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PLACEHOLDER_NOT_BEFORE = "2025-01-02T00:00:00+00:00"
PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", re.S)


def first_certificate(pem: str) -> str:
    """The first certificate of a PEM chain: the one Key Vault keeps (cer) from a merged chain, and DPS from a file."""
    match = PEM_BLOCK.search(pem)
    if not match:
        raise Fail("fake az: no PEM certificate in the file", 3)
    return match.group(0).rstrip("\n") + "\n"


def thumbprint(pem: str) -> str:
    """SHA-1 over the DER certificate, upper-case hex: Key Vault's x509ThumbprintHex and DPS's properties.thumbprint."""
    body = first_certificate(pem).split("-----")[2]
    return hashlib.sha1(base64.b64decode("".join(body.split())), usedforsecurity=False).hexdigest().upper()


def cryptography_x509():
    import site  # the shim starts Python with -S; cryptography lives in site-packages

    site.main()
    from cryptography import x509

    return x509


def new_csr(name: str) -> str:
    """A CSR of a new EC P-384 key, base64 DER, as Key Vault returns for a pending version with a new key."""
    x509 = cryptography_x509()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Sensor Onboarding {name}")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA384())
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


def merged_certificate(pending: dict, pem: str) -> tuple[str, str]:
    """The certificate Key Vault keeps from a merged chain and its notBefore. Where the pending version's CSR and the
    chain are real, the certificate must hold the version's key, as Key Vault refuses any other."""
    certificate = first_certificate(pem)
    if certificate == PLACEHOLDER_PEM or "MIIB\n" in certificate:
        return certificate, PLACEHOLDER_NOT_BEFORE
    x509 = cryptography_x509()
    from cryptography.hazmat.primitives import serialization

    loaded = x509.load_pem_x509_certificate(certificate.encode())
    try:
        csr = x509.load_der_x509_csr(base64.b64decode(pending.get("csr", "")))
    except ValueError:
        csr = None
    if csr is not None:
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if loaded.public_key().public_bytes(*spki) != csr.public_key().public_bytes(*spki):
            raise Fail("Public key from x509 certificate and key of this instance doesn't match", 1)
    return certificate, loaded.not_valid_before_utc.isoformat()


def kv_versions(state: dict, name: str) -> list[dict]:
    """The versions of Key Vault certificate `name`, oldest first; a state written before versions were kept (only
    kv_certs) has one, complete or pending, with a placeholder certificate."""
    versions = state.setdefault("kv_versions", {})
    if name not in versions and name in state.get("kv_certs", {}):
        status = state["kv_certs"][name]
        versions[name] = [{"version": "0" * 32, "status": status,
                           **({"pem": PLACEHOLDER_PEM, "notBefore": PLACEHOLDER_NOT_BEFORE}
                              if status == "complete" else {})}]
    return versions.get(name, [])


def kv_version(state: dict, name: str, version: str | None = None) -> dict:
    """The version asked for, else the newest complete one (what `certificate show` reads while a newer version
    is pending is not modelled: deploy.sh asks `certificate pending show` first)."""
    complete = [v for v in kv_versions(state, name) if v["status"] == "complete"]
    found = [v for v in complete if v["version"] == version] if version else complete[-1:]
    if not found:
        raise Fail("CertificateNotFound", 3)
    return found[0]


def vault_id(name: str, version: str) -> str:
    return f"https://kv-{TOKEN}.vault.azure.net/certificates/{name}/{version}"


def handle_az(state: dict, command: str, args: dict) -> str:
    query = args.get("query")
    if command == "account show":
        if not state.get("logged_in", True):
            raise Fail("Please run 'az login' to setup account.")
        account = {"id": SUBSCRIPTION, "isDefault": True, "name": "Onboarding (fake)", "tenantId": SUBSCRIPTION,
                   "user": {"name": "operator@example.com", "type": state.get("principal_kind", "user")}}
        return tsv(search(account, args.get("query")))
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
        return tsv(search(deployment_document(deployment["outputs"]), args.get("query")))
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
        return tsv(search(deployment_document(outputs), args.get("query")))
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
        if state.get("kv_certs", {}).get(args.get("name")) != "complete":
            raise Fail("CertificateNotFound", 3)
        found = kv_version(state, args["name"], args.get("version"))
        answers = {"x509ThumbprintHex": lambda: thumbprint(found["pem"]),
                   "[[x509ThumbprintHex, attributes.notBefore, id]]": lambda: tsv(
                       [[thumbprint(found["pem"]), found["notBefore"], vault_id(args["name"], found["version"])]])}
        if query not in answers:
            raise Fail(f"fake az: unexpected query {query!r}", 99)
        return answers[query]()
    if command == "keyvault certificate pending show":
        # The certificate operation: inProgress while the newest version waits for its merge; completed after it.
        name = args["name"]
        versions = kv_versions(state, name)
        if not versions:
            raise Fail("PendingCertificateNotFound", 3)
        latest = versions[-1]
        if query == "status":
            return "inProgress" if latest["status"] == "pending" else "completed"
        if query == "csr":
            return latest.get("csr") or base64.b64encode(b"not a real csr").decode()
        raise Fail(f"fake az: unexpected query {query!r}", 99)
    if command == "keyvault certificate create":
        policy = json.loads(Path(args["policy"].removeprefix("@")).read_text())
        key = policy["keyProperties"]
        if key["exportable"] or key["keyType"] != "EC-HSM" or policy["issuerParameters"]["name"] != "Unknown":
            raise Fail("fake az: CA key policy must be a non-exportable HSM key with an external issuer", 99)
        name = args["name"]
        versions = kv_versions(state, name)
        if versions and versions[-1]["status"] == "pending":
            raise Fail(f"Conflict: there is a pending certificate operation for {name}", 1)
        if versions:  # a new version of an existing certificate: a new key unless the policy reuses the old one
            if key.get("reuseKey") is not False:
                raise Fail("fake az: a CA rotation needs a new key (keyProperties.reuseKey false)", 99)
            csr = new_csr(name)
        else:
            csr = state.get("csr_b64", {}).get(name, base64.b64encode(b"not a real csr").decode())
            state.setdefault("kv_certs", {})[name] = "pending"
        versions.append({"version": hashlib.md5(f"{name}/{len(versions)}".encode(), usedforsecurity=False).hexdigest(),
                         "status": "pending", "csr": csr})
        state.setdefault("kv_versions", {})[name] = versions
        state.setdefault("policies", {})[name] = policy
        return ""
    if command == "keyvault certificate pending merge":
        pem = Path(args["file"]).read_text()
        if os.environ.get("FAKE_AZ_VERIFY_CA"):
            verify_intermediate(pem)
        versions = kv_versions(state, args["name"])
        if not versions or versions[-1]["status"] != "pending":
            raise Fail("Pending certificate not found", 3)
        certificate, not_before = merged_certificate(versions[-1], pem)
        versions[-1].update(status="complete", pem=certificate, notBefore=not_before)
        state.setdefault("kv_certs", {})[args["name"]] = "complete"
        return ""
    if command == "keyvault certificate download":
        if args.get("encoding") != "PEM":
            raise Fail("fake az: DPS takes the CA certificate as PEM (--encoding PEM)", 99)
        if state.get("kv_certs", {}).get(args.get("name")) != "complete":
            raise Fail("CertificateNotFound", 3)
        Path(args["file"]).write_text(kv_version(state, args["name"], args.get("version"))["pem"])
        return ""
    if command == "iot dps certificate show":
        name = args["certificate_name"]
        cert = state.get("dps_certs", {}).get(name)
        if cert is None:
            raise Fail("CertificateNotFound", 3)
        print_ = state.get("dps_thumbprints", {}).get(name)
        answers = {"properties.isVerified": "true" if cert else "false", "etag": "etag-1",
                   "[[properties.thumbprint, properties.isVerified, properties.expiry]]":
                       tsv([[print_, bool(cert), "2030-01-02T00:00:00+00:00"]])}
        if query not in answers:
            raise Fail(f"fake az: unexpected query {query!r}", 99)
        return answers[query]
    if command in ("iot dps certificate create", "iot dps certificate update"):
        if args.get("verified") is not True:
            raise Fail("fake az: DPS CA certificates must be registered verified", 99)
        if command.endswith("update") and args["etag"] != "etag-1":
            raise Fail("PreconditionFailed: etag mismatch", 3)
        state.setdefault("dps_certs", {})[args["certificate_name"]] = True
        state.setdefault("dps_thumbprints", {})[args["certificate_name"]] = thumbprint(Path(args["path"]).read_text())
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
        # The group as azure-iot shows it (EnrollmentGroup of the DPS service API), as far as deploy.sh reads it.
        shown = {"enrollmentGroupId": args["enrollment_id"], "iotHubs": group.get("iotHubs"),
                 "allocationPolicy": group.get("allocationPolicy"),
                 "customAllocationDefinition": {"webhookUrl": group.get("webhookUrl"),
                                                "apiVersion": group.get("apiVersion")},
                 "attestation": {"type": "x509", "x509": {"caReferences": group.get("caReferences") or {}}}}
        return tsv(search(shown, query))
    if command in ("iot dps enrollment-group create", "iot dps enrollment-group update"):
        return enrollment_group(state, command, args)
    raise Fail(f"fake az: the parser knows {command!r} but no handler does", 99)


def verify_intermediate(pem: str) -> None:
    x509 = cryptography_x509()
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
