"""A recording, stateful stand-in for `az` and `sqlcmd`, so infra/deploy.sh runs offline.

Installed on PATH by tests/infra/conftest.py as two shims (`az`, `sqlcmd`) that call
`python fake_az.py <tool> <args...>`. Every invocation is appended to $FAKE_AZ_LOG as one JSON line
({"tool", "argv"}); the simulated subscription lives in $FAKE_AZ_STATE (JSON), so a second run of the script
sees what the first one created. Only the commands and --query forms that deploy.sh uses are modelled, and an
unknown command fails loudly (exit 99), so the script cannot silently call something the fake does not know.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import zipfile
from pathlib import Path

TOKEN = "tok42"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
PRINCIPAL = "11111111-1111-1111-1111-111111111111"
FUNCTION_PRINCIPAL = "22222222-2222-2222-2222-222222222222"
OUTPUT_ORDER_RE = re.compile(r"^properties\.outputs\.\[(.*)\]$")


class Fail(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def load_state() -> dict:
    path = Path(os.environ["FAKE_AZ_STATE"])
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(state: dict) -> None:
    Path(os.environ["FAKE_AZ_STATE"]).write_text(json.dumps(state, indent=1, sort_keys=True))


def record(tool: str, argv: list[str]) -> None:
    with open(os.environ["FAKE_AZ_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"tool": tool, "argv": argv}) + "\n")


def split(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Command words, then options (each option keeps every value that follows it)."""
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
    regions = ["west", "central", "east"]
    app = f"func-{TOKEN}"
    return {
        "AZURE_LOCATION": params["location"],
        "AZURE_RESOURCE_GROUP": params.get("resourceGroupName") or f"rg-{env}",
        "AZURE_FUNCTION_APP_NAME": app,
        "SERVICE_ONBOARDING_BASE_URL": f"https://{app}.azurewebsites.net",
        "FUNCTION_PRINCIPAL_ID": FUNCTION_PRINCIPAL,
        "AZURE_STORAGE_ACCOUNT_NAME": f"st{TOKEN}",
        "TEMPLATES_CONTAINER": "sensor-configurations",
        "AZURE_KEY_VAULT_NAME": f"kv-{TOKEN}",
        "AZURE_SQL_SERVER_NAME": f"sql-{TOKEN}",
        "AZURE_SQL_SERVER_FQDN": f"sql-{TOKEN}.database.windows.net",
        "AZURE_SQL_DATABASE_NAME": "sqldb-onboarding",
        "AZURE_DPS_NAME": f"provs-{TOKEN}",
        "REGIONS": ",".join(regions),
        "IOT_HUB_HOSTNAMES": ",".join(f"iot-{r}-{TOKEN}.azure-devices.net" for r in regions),
        "DEVICE_CREATED_SUBSCRIBED": "True" if params.get("subscribeDeviceCreated") == "true" else "False",
    }


def tsv_outputs(outputs: dict[str, str], query: str) -> str:
    match = OUTPUT_ORDER_RE.match(query or "")
    if not match:
        raise Fail(f"fake az: unsupported outputs query {query!r}", 99)
    names = [field.strip().removesuffix(".value") for field in match.group(1).split(",")]
    return "\t".join(outputs.get(name, "None") for name in names)


def parameters(options: dict) -> dict[str, str]:
    params = {}
    for item in options.get("--parameters", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise Fail(f"fake az: parameter without '=': {item!r}", 99)
        params[key] = value
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


def rest(state: dict, options: dict) -> str:
    method = (opt(options, "--method", "-m") or "get").lower()
    url = opt(options, "--url", "--uri", "-u") or ""
    query = opt(options, "--query")
    if "checkNameAvailability" in url or "checknameavailability" in url or "NameAvailability" in url:
        body = json.loads(opt(options, "--body", "-b") or "{}")
        available = body["name"] not in state.get("taken_names", [])
        field = query or "nameAvailable"
        if field not in ("nameAvailable", "available"):
            raise Fail(f"fake az: unexpected query {field!r}", 99)
        return "true" if available else "false"
    if url.endswith("/api/health") and method == "get":
        if "--skip-authorization-header" not in options:
            raise Fail("fake az: the health check must skip the ARM authorization header", 99)
        return "ok" if query == "status" else json.dumps({"status": "ok", "components": {}})
    if url.endswith("/admin/functions/refresh_crls") and method == "post":
        headers = " ".join(options.get("--headers", []))
        if "x-functions-key=master-key" not in headers:
            raise Fail("fake az: admin call without the master key", 99)
        for name, status in state.get("kv_certs", {}).items():
            if status == "complete":
                state.setdefault("kv_secrets", []).append(f"crl-{name}")
        return ""
    raise Fail(f"fake az rest: unmodelled {method} {url}", 99)


def handle_az(state: dict, argv: list[str]) -> str:
    words, options = split(argv)
    cmd = " ".join(words)
    query = opt(options, "--query")
    if cmd == "account show":
        if not state.get("logged_in", True):
            raise Fail("Please run 'az login' to setup account.")
        return f"{SUBSCRIPTION}\toperator@example.com\tuser"
    if cmd == "extension show":
        if opt(options, "--name", "-n") in state.get("extensions", ["azure-iot"]):
            return "0.26.0"
        raise Fail("The extension azure-iot is not installed.")
    if cmd == "ad signed-in-user show":
        return PRINCIPAL
    if cmd == "deployment sub show":
        deployment = state.get("deployments", {}).get(opt(options, "--name", "-n"))
        if not deployment:
            raise Fail("DeploymentNotFound", 3)
        return tsv_outputs(deployment["outputs"], query)
    if cmd == "deployment sub what-if":
        if "--no-pretty-print" not in options or query != "changes[].[changeType, resourceId]":
            raise Fail("fake az: what-if must be --no-pretty-print with the changes query", 99)
        params = parameters(options)
        return "\n".join(f"{kind}\t{rid}" for kind, rid in planned_changes(state, params))
    if cmd == "deployment sub create":
        params = parameters(options)
        template = opt(options, "--template-file", "-f") or ""
        if not template.endswith("infra/main.bicep") or not Path(template).exists():
            raise Fail(f"fake az: template {template!r} not found", 99)
        outputs = outputs_for(params)
        state.setdefault("deployments", {})[opt(options, "--name", "-n")] = {"outputs": outputs, "params": params}
        if params.get("subscribeDeviceCreated") == "true":
            if "on_device_created" not in state.get("functions", []):
                raise Fail("Deployment failed: the function on_device_created does not exist (Event Grid endpoint "
                           "validation)")
            state["subscribed"] = True
        return tsv_outputs(outputs, query)
    if cmd == "storage account check-name":
        return "false" if opt(options, "--name", "-n") in state.get("taken_names", []) else "true"
    if cmd == "keyvault list-deleted":
        return "\n".join(state.get("deleted_vaults", []))
    if cmd == "rest":
        return rest(state, options)
    if cmd == "functionapp deployment source config-zip":
        src = Path(opt(options, "--src") or "")
        with zipfile.ZipFile(src) as zf:
            names = set(zf.namelist())
        if "function_app.py" not in names or any(n.startswith(("local/", "tests/", ".local/")) for n in names):
            raise Fail(f"fake az: bad package contents {sorted(names)[:10]}", 99)
        state["package"] = sorted(names)
        state["functions"] = [f for f in os.environ.get("FAKE_AZ_FUNCTIONS", "").split(",") if f]
        return ""
    if cmd == "functionapp function list":
        app = opt(options, "--name", "-n")
        return "\n".join(f"{app}/{name}" for name in state.get("functions", []))
    if cmd == "functionapp function keys list":
        if opt(options, "--function-name") != "allocate" or query != "default":
            raise Fail("fake az: unexpected function key request", 99)
        return "function-key-allocate"
    if cmd == "functionapp keys list":
        return "master-key"
    if cmd in ("sql server firewall-rule create", "sql server firewall-rule delete"):
        rules = state.setdefault("firewall_rules", [])
        name = opt(options, "--name", "-n")
        if cmd.endswith("create"):
            rules.append(name)
        elif name in rules:
            rules.remove(name)
        return ""
    if cmd == "storage blob exists":
        blobs = state.get("blobs", {}).get(opt(options, "--container-name", "-c"), [])
        return "true" if opt(options, "--name", "-n") in blobs else "false"
    if cmd == "storage blob upload":
        if opt(options, "--auth-mode") != "login":
            raise Fail("fake az: blob upload must use --auth-mode login (no account keys)", 99)
        json.loads(Path(opt(options, "--file", "-f")).read_text())
        state.setdefault("blobs", {}).setdefault(opt(options, "--container-name", "-c"), []).append(
            opt(options, "--name", "-n"))
        return ""
    if cmd == "keyvault certificate show":
        if state.get("kv_certs", {}).get(opt(options, "--name", "-n")) == "complete":
            return "A1B2C3"
        raise Fail("CertificateNotFound", 3)
    if cmd == "keyvault certificate pending show":
        name = opt(options, "--name", "-n")
        if state.get("kv_certs", {}).get(name) != "pending":
            raise Fail("PendingCertificateNotFound", 3)
        if query == "status":
            return "inProgress"
        if query == "csr":
            return state.get("csr_b64", {}).get(name, base64.b64encode(b"not a real csr").decode())
        raise Fail(f"fake az: unexpected query {query!r}", 99)
    if cmd == "keyvault certificate create":
        policy = json.loads(Path((opt(options, "--policy", "-p") or "").removeprefix("@")).read_text())
        key = policy["keyProperties"]
        if key["exportable"] or key["keyType"] != "EC-HSM" or policy["issuerParameters"]["name"] != "Unknown":
            raise Fail("fake az: CA key policy must be a non-exportable HSM key with an external issuer", 99)
        state.setdefault("kv_certs", {})[opt(options, "--name", "-n")] = "pending"
        state.setdefault("policies", {})[opt(options, "--name", "-n")] = policy
        return ""
    if cmd == "keyvault certificate pending merge":
        name = opt(options, "--name", "-n")
        pem = Path(opt(options, "--file", "-f") or "").read_text()
        check_ca_chain = os.environ.get("FAKE_AZ_VERIFY_CA")
        if check_ca_chain:
            verify_intermediate(pem)
        state.setdefault("kv_certs", {})[name] = "complete"
        return ""
    if cmd == "keyvault certificate download":
        pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        Path(opt(options, "--file", "-f") or "").write_text(pem)
        return ""
    if cmd == "keyvault secret show":
        if opt(options, "--name", "-n") in state.get("kv_secrets", []):
            return "https://vault/secrets/x"
        raise Fail("SecretNotFound", 3)
    if cmd == "iot dps certificate show":
        cert = state.get("dps_certs", {}).get(opt(options, "--certificate-name", "--name", "-n"))
        if cert is None:
            raise Fail("CertificateNotFound", 3)
        return {"properties.isVerified": "true" if cert else "false", "etag": "etag-1"}[query]
    if cmd in ("iot dps certificate create", "iot dps certificate update"):
        if opt(options, "--verified") != "true":
            raise Fail("fake az: DPS CA certificates must be registered verified", 99)
        state.setdefault("dps_certs", {})[opt(options, "--certificate-name", "--name", "-n")] = True
        return ""
    if cmd == "iot dps enrollment-group show":
        group = state.get("enrollment_groups", {}).get(opt(options, "--enrollment-id", "--eid"))
        if group is None:
            raise Fail("EnrollmentGroupNotFound", 3)
        return group["webhookUrl"]
    if cmd in ("iot dps enrollment-group create", "iot dps enrollment-group update"):
        group_id = opt(options, "--enrollment-id", "--eid")
        if opt(options, "--allocation-policy", "--ap") != "custom":
            raise Fail("fake az: enrollment groups use custom allocation", 99)
        url = opt(options, "--webhook-url", "--wh") or ""
        if not re.fullmatch(r"https://[^/]+/api/allocate\?code=.+", url) or not opt(options, "--api-version", "--av"):
            raise Fail(f"fake az: bad webhook {url!r}", 99)
        if cmd.endswith("create"):
            ca = opt(options, "--root-ca-name", "--ca-name")
            if not state.get("dps_certs", {}).get(ca):
                raise Fail(f"fake az: {ca} is not a verified DPS certificate", 99)
        state.setdefault("enrollment_groups", {})[group_id] = {
            "webhookUrl": url, "iotHubs": opt(options, "--iot-hubs", "--ih")}
        return ""
    raise Fail(f"fake az: unmodelled command {cmd!r}", 99)


def verify_intermediate(pem: str) -> None:
    import site  # the shim starts Python with -S; cryptography lives in site-packages

    site.main()
    from cryptography import x509

    certificate = x509.load_pem_x509_certificates(pem.encode())[0]
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    if not constraints.ca or constraints.path_length != 0 or not usage.key_cert_sign or not usage.crl_sign:
        raise Fail("fake az: the merged certificate is not an intermediate CA (CA:true, pathlen 0, keyCertSign)", 99)


def handle_sqlcmd(state: dict, argv: list[str]) -> str:
    _words, options = split(argv)
    if opt(options, "--authentication-method") != "ActiveDirectoryDefault":
        raise Fail("fake sqlcmd: Entra authentication expected", 99)
    blocked_ip = state.get("sql_blocked_ip")
    if blocked_ip and not any(blocked_ip.replace(".", "-") in r for r in state.get("firewall_rules", [])):
        raise Fail(f"Cannot open server requested by the login. Client with IP address '{blocked_ip}' is not "
                   "allowed to access the server.")
    query = opt(options, "-Q")
    script = opt(options, "-i")
    if query:
        if "sys.tables" in query:
            missing = any(f"'{table}'" in query for table in state.get("sql_tables_missing", []))
            return "1" if state.get("sql_schema") and not missing else "0"
        return "1"
    if script:
        name = Path(script).name
        if name == "schema.sql":
            if state.get("sql_schema"):
                raise Fail("There is already an object named 'facilities' in the database.")
            state["sql_schema"] = True
        elif name.startswith("schema-"):  # one CREATE TABLE taken from schema.sql
            table = name.removeprefix("schema-").split(".")[0]
            text = Path(script).read_text()
            if not text.startswith(f"CREATE TABLE {table} (") or not text.rstrip().endswith(");"):
                raise Fail(f"fake sqlcmd: not one CREATE TABLE {table} statement: {text[:80]!r}", 99)
            state["sql_tables_missing"] = [t for t in state.get("sql_tables_missing", []) if t != table]
        variables = dict(v.split("=", 1) for v in options.get("-v", []))
        state.setdefault("sql_scripts", []).append({"script": name, "variables": variables})
        return ""
    raise Fail("fake sqlcmd: nothing to run", 99)


def main() -> int:
    tool, argv = sys.argv[1], sys.argv[2:]
    record(tool, argv)
    state = load_state()
    try:
        out = handle_az(state, argv) if tool == "az" else handle_sqlcmd(state, argv)
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
