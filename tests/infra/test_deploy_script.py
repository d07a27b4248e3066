"""infra/deploy.sh against a recording fake `az` (and `sqlcmd`) on PATH: call order, idempotency, --what-if,
and the clear errors the issue asks for. The fake keeps a simulated subscription between runs."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.infra.bicep import INFRA
from tests.infra.conftest import DEPLOY
from tests.infra.fake_az import LINKED_HUBS, SUBSCRIPTION, hub_names, thumbprint
from tests.infra.scenarios import REGIONS, real_csrs, root_ca

MUTATING = {
    "az deployment sub create", "az functionapp deployment source config-zip", "az storage blob upload",
    "az keyvault certificate create", "az keyvault certificate pending merge", "az iot dps certificate create",
    "az iot dps certificate update", "az iot dps enrollment-group create", "az iot dps enrollment-group update",
    "az sql server firewall-rule create", "az sql server firewall-rule delete", "az role assignment create",
}
ORIGINAL_TABLES = ["facilities", "iot_hubs", "facility_overrides", "revocations", "provisioning_events"]
MIGRATION_FILES = sorted((INFRA / "sql" / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))
MIGRATIONS = [path.name[:4] for path in MIGRATION_FILES]  # every version, in order: each run applies them all
# CREATE TABLE t of the migrations, in order (the tables a database made before migrations existed lacks, and more).
CREATED_TABLES = [table for path in MIGRATION_FILES for table in re.findall(
    r"^CREATE TABLE (\w+)", path.read_text(), re.MULTILINE)]
# ALTER TABLE t ADD c of the migrations, in order (the columns a new database gains beside its CREATE TABLEs).
ADDED_COLUMNS = [f"{table}.{column}" for path in MIGRATION_FILES for table, column in re.findall(
    r"^ALTER TABLE (\w+) ADD (?!CONSTRAINT\b)(\w+) ", path.read_text(), re.MULTILINE)]


def mutations(run) -> list[str]:
    found = []
    for call, command in zip(run.calls, run.commands, strict=True):
        argv = call["argv"]
        if command in MUTATING:
            found.append(command)
        elif command == "sqlcmd" and "-i" in argv:
            found.append(f"sqlcmd -i {argv[argv.index('-i') + 1].rsplit('/', 1)[-1]}")
        elif command == "az rest" and "post" in argv and any("/admin/" in a for a in argv):
            found.append("az rest admin")
    return found


def first(run, command: str, containing: str = "") -> int:
    for index, (call, name) in enumerate(zip(run.calls, run.commands, strict=True)):
        if name == command and any(containing in arg for arg in call["argv"]):
            return index
    raise AssertionError(f"{command} {containing} was not called")


@pytest.fixture(scope="module")
def first_deployment(tmp_path_factory):
    """One full first run (CA CSRs are real and signed by a test root), shared by the tests that read it."""
    from tests.infra.code_scan import functions
    from tests.infra.conftest import FakeAzure

    root = tmp_path_factory.mktemp("first-deployment")
    fake = FakeAzure(root, sorted(functions()))
    cert, key = root_ca(root)
    fake.update(csr_b64=real_csrs())
    sign = ("--sign-with-root", str(cert), str(key))
    run = fake.run(*sign, env={"FAKE_AZ_VERIFY_CA": "1"})
    return fake, sign, run, fake.state


@pytest.fixture
def signed(first_deployment, fake_azure):
    """A fake subscription in the state the first deployment left, and the options it used."""
    _fake, sign, _run, state = first_deployment
    fake_azure.update(**state)
    return fake_azure, sign


def test_first_run_issues_the_steps_in_order(first_deployment):
    _fake, _sign, run, state = first_deployment
    assert run.returncode == 0, run.output
    order = ["az account show", "az extension show", "az deployment sub what-if", "az deployment sub create",
             "az functionapp deployment source config-zip", "sqlcmd", "az storage blob upload",
             "az keyvault certificate create", "az keyvault certificate pending merge",
             "az iot dps certificate create", "az iot dps enrollment-group create",
             "az rest /admin/functions/refresh_crls", "az rest /api/health"]
    positions = [first(run, *command.split(" /", 1)) if "/" in command else first(run, command) for command in order]
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
    # Event Grid subscriptions are deployed once the code (and so on_device_created) exists.
    creates = [i for i, c in enumerate(run.commands) if c == "az deployment sub create"]
    assert len(creates) == 2 and creates[0] < first(run, "az functionapp deployment source config-zip") < creates[1]
    assert "subscribeDeviceCreated=false" in run.calls[creates[0]]["argv"]
    assert "subscribeDeviceCreated=true" in run.calls[creates[1]]["argv"]
    assert sorted(state["enrollment_groups"]) == [f"sensors-{r}" for r in sorted(REGIONS)]
    for group in state["enrollment_groups"].values():
        assert group["webhookUrl"] == "https://func-tok42.azurewebsites.net/api/allocate?code=function-key-allocate"
        assert group["iotHubs"] == list(LINKED_HUBS)
    assert all(state["dps_certs"].values()) and set(state["kv_certs"].values()) == {"complete"}
    # Each CA's CRL is a blob of the crl container, published by the one refresh_crls run the script started.
    assert sorted(state["blobs"]["crl"]) == [f"intermediate-ca-{r}.crl" for r in sorted(REGIONS)]
    checks = run.parsed("storage blob exists")
    assert {(c["container_name"], c["name"]) for c in checks if c["container_name"] == "crl"} == {
        ("crl", f"intermediate-ca-{r}.crl") for r in REGIONS}
    assert len([m for m in mutations(run) if m == "az rest admin"]) == 1
    scripts = [s["script"] for s in state["sql_scripts"]]
    assert scripts[0] == "schema_migrations.sql" and scripts[len(MIGRATIONS) + 1] == "grant-function.sql"
    assert [name[:len("migration-0000")] for name in scripts[1:len(MIGRATIONS) + 1]] == [
        f"migration-{version}" for version in MIGRATIONS]
    assert state["sql_migrations"] == MIGRATIONS
    assert len(state["sql_tables"]) == len(CREATED_TABLES) + 1  # and schema_migrations
    assert state["sql_columns"][:4] == ["certificates.certificate_pem", "certificates.partner_id",
                                        "certificates.lot", "certificates.issued_at"]
    assert state["sql_columns"] == ADDED_COLUMNS
    # The app signs with each CA key, by a role assignment on that key alone (made once the key exists).
    assert sorted(a.rsplit("/", 1)[1] for a in state["role_assignments"]) == [f"intermediate-ca-{r}" for r in
                                                                              sorted(REGIONS)]
    assert all(a.startswith("22222222-2222-2222-2222-222222222222|12338af0-0e69-4776-bea7-57ae8d297424|/subscriptions/")
               for a in state["role_assignments"])
    assert first(run, "az keyvault certificate create") < first(run, "az role assignment create")
    assert len(state["blobs"]["sensor-configurations"]) == 5
    assert "function-key-allocate" not in run.output and "master-key" not in run.output
    health = [c for c in run.calls if c["tool"] == "az" and any(a.endswith("/api/health") for a in c["argv"])]
    assert health and run.calls.index(health[-1]) == len(run.calls) - 1


def test_every_enrollment_group_links_each_hub_as_its_own_value(first_deployment):
    # --iot-hubs is nargs='+': one argument per hub. One quoted word would reach DPS as ONE linked-hub entry.
    _fake, _sign, run, state = first_deployment
    created = run.parsed("iot dps enrollment-group create")
    assert len(created) == len(REGIONS)
    assert all(args["iot_hubs"] == list(LINKED_HUBS) for args in created)
    assert all(group["iotHubs"] == list(LINKED_HUBS) for group in state["enrollment_groups"].values())


def test_a_changed_webhook_is_updated_in_place_with_every_hub(signed):
    fake, sign = signed
    state = fake.state
    for group in state["enrollment_groups"].values():
        group["webhookUrl"] = group["webhookUrl"].replace("function-key-allocate", "rotated-away")
    fake.update(**state)
    run = fake.run(*sign)
    assert run.returncode == 0, run.output
    updated = run.parsed("iot dps enrollment-group update")
    assert sorted(args["enrollment_id"] for args in updated) == sorted(f"sensors-{r}" for r in REGIONS)
    assert all(args["iot_hubs"] == list(LINKED_HUBS) for args in updated)
    assert "az iot dps enrollment-group create" not in run.commands
    for group in fake.state["enrollment_groups"].values():
        assert group["webhookUrl"].endswith("code=function-key-allocate") and group["iotHubs"] == list(LINKED_HUBS)


def test_an_unverified_dps_certificate_is_updated_as_verified(signed):
    fake, sign = signed
    state = fake.state
    state["dps_certs"]["intermediate-ca-east"] = False
    fake.update(**state)
    run = fake.run(*sign)
    assert run.returncode == 0, run.output
    (update,) = run.parsed("iot dps certificate update")
    assert update["certificate_name"] == "intermediate-ca-east" and update["etag"] == "etag-1"
    assert update["verified"] is True and fake.state["dps_certs"]["intermediate-ca-east"] is True


def test_a_service_principal_login_is_resolved_with_ad_sp_show(fake_azure):
    fake_azure.update(principal_kind="servicePrincipal")
    run = fake_azure.run("--what-if")
    assert run.returncode == 0, run.output
    assert run.parsed("ad sp show") == [{"id": "operator@example.com", "query": "id", "output": "tsv"}]
    assert "az ad signed-in-user show" not in run.commands
    (what_if,) = run.parsed("deployment sub what-if")
    assert "principalType=ServicePrincipal" in what_if["parameters"][0]


def test_second_run_changes_nothing(signed):
    fake, sign = signed
    before = fake.state
    run = fake.run(*sign)
    assert run.returncode == 0, run.output
    # The Bicep deployment (incremental, declarative) and the code publish are the only writes; the deployment
    # runs once, already with the DeviceCreated subscription, because on_device_created exists.
    changes = [m for m in mutations(run)
               if not m.startswith("sqlcmd -i ") or m.startswith(("sqlcmd -i migration-", "sqlcmd -i schema_mig"))]
    assert changes == ["az deployment sub create", "az functionapp deployment source config-zip"]
    after = fake.state
    for key in ("enrollment_groups", "dps_certs", "kv_certs", "blobs", "role_assignments",
                "sql_migrations", "sql_tables"):
        assert after[key] == before[key], key
    assert "schema current" in run.output


def test_an_upgrade_from_crls_in_key_vault_secrets_runs_the_crl_refresh_once(signed):
    # An environment of an earlier release: CAs, DPS and enrollment groups in place, CRLs only in Key Vault secrets
    # (which this release no longer reads), so no blob crl/{ca}.crl. The script starts refresh_crls once, then the
    # smoke check; the next run finds every CRL and starts nothing.
    fake, sign = signed
    blobs = {k: v for k, v in fake.state["blobs"].items() if k != "crl"}
    fake.update(blobs=blobs, kv_secrets=[f"crl-intermediate-ca-{r}" for r in REGIONS])
    run = fake.run(*sign)
    assert run.returncode == 0, run.output
    assert [m for m in mutations(run) if m == "az rest admin"] == ["az rest admin"]
    assert first(run, "az rest", "/admin/functions/refresh_crls") < first(run, "az rest", "/api/health")
    assert "3 CA(s) without a CRL in crl: running refresh_crls once" in run.output
    assert sorted(fake.state["blobs"]["crl"]) == [f"intermediate-ca-{r}.crl" for r in sorted(REGIONS)]
    again = fake.run(*sign)
    assert "az rest admin" not in mutations(again) and "every ready CA has its CRL in crl" in again.output


def test_a_database_from_before_migrations_is_adopted(fake_azure):
    # Made by schema.sql of an earlier release: its tables, no schema_migrations. Migration 0001 creates only what is
    # missing (each CREATE is guarded) and is recorded; the next run applies nothing.
    fake_azure.update(sql_tables=list(ORIGINAL_TABLES))
    run = fake_azure.run()
    assert run.returncode == 0, run.output
    state = fake_azure.state
    assert state["sql_migrations"] == MIGRATIONS
    assert state["sql_created"] == [t for t in CREATED_TABLES if t not in ORIGINAL_TABLES]
    assert state["sql_created"][:4] == ["hub_allocations", "certificates", "certificate_events", "partners"]


def test_a_new_migration_is_applied_once_after_the_recorded_ones(fake_azure, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_initial.sql").write_text((INFRA / "sql" / "migrations" / "0001_initial.sql").read_text())
    (folder / "0002_hub_notes.sql").write_text(
        "-- notes per hub\nCREATE TABLE hub_notes (\n    host_name NVARCHAR(255) NOT NULL PRIMARY KEY,\n"
        "    note NVARCHAR(4000) NOT NULL\n);\n")
    fake_azure.update(sql_tables=[*ORIGINAL_TABLES, "schema_migrations"], sql_migrations=["0001"])
    env = {"DEPLOY_MIGRATIONS_DIR": str(folder)}
    run = fake_azure.run(env=env)
    assert run.returncode == 0, run.output
    applied = [m for m in mutations(run) if m.startswith("sqlcmd -i migration-")]
    assert len(applied) == 1 and applied[0].startswith("sqlcmd -i migration-0002.")
    assert fake_azure.state["sql_migrations"] == ["0001", "0002"] and fake_azure.state["sql_created"] == ["hub_notes"]
    (folder / "2_bad.sql").write_text("")
    bad = fake_azure.run(env=env)
    assert bad.returncode == 1 and "NNNN_name.sql" in bad.stderr and mutations(bad) == []


def test_migration_tsql_guards_each_statement_and_records_the_version(tmp_path):
    migration = tmp_path / "0007_things.sql"
    migration.write_text(
        "-- it's a comment with a quote\nCREATE TABLE things (\n    id NVARCHAR(16) NOT NULL DEFAULT 'x'\n);\n"
        "CREATE INDEX ix_things_id ON things (id);\nCREATE UNIQUE INDEX ux_things ON things (id);\n"
        "ALTER TABLE things ADD note NVARCHAR(64) NULL;\nUPDATE things SET note = 'n' WHERE note IS NULL;\n")
    script = f'source "{DEPLOY}"; migration_tsql "{migration}" 0007 things'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        "SET XACT_ABORT ON;", "SET NOCOUNT ON;", "BEGIN TRANSACTION;",
        "IF OBJECT_ID(N'things', N'U') IS NULL",
        "    EXEC(N'CREATE TABLE things (", "    id NVARCHAR(16) NOT NULL DEFAULT ''x''", ")');",
        "IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_things_id' AND object_id = OBJECT_ID(N'things'))",
        "    EXEC(N'CREATE INDEX ix_things_id ON things (id)');",
        "IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ux_things' AND object_id = OBJECT_ID(N'things'))",
        "    EXEC(N'CREATE UNIQUE INDEX ux_things ON things (id)');",
        "IF COL_LENGTH(N'things', N'note') IS NULL",
        "    EXEC(N'ALTER TABLE things ADD note NVARCHAR(64) NULL');",
        "    EXEC(N'UPDATE things SET note = ''n'' WHERE note IS NULL');",
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (N'0007', N'things', SYSUTCDATETIME());",
        "COMMIT;"]


def test_pending_ca_without_the_root_stops_before_dps(fake_azure):
    run = fake_azure.run()
    assert run.returncode == 0, run.output
    assert "sign" in run.stderr and "offline root" in run.stderr
    assert (fake_azure.ca_dir / "intermediate-ca-west.csr").read_text().startswith("-----BEGIN CERTIFICATE REQUEST")
    assert "az iot dps enrollment-group create" not in run.commands


def test_what_if_prints_the_plan_and_changes_nothing(fake_azure):
    run = fake_azure.run("--what-if")
    assert run.returncode == 0, run.output
    assert mutations(run) == []
    assert "sqlcmd" not in run.commands
    assert "deployments" not in fake_azure.state
    text = run.output
    for expected in ("Create: /subscriptions/", "would run: az deployment sub create", "would package",
                     "would apply the migrations of infra/sql/migrations", "0001_initial",
                     "would run: az storage blob upload", "would run: az role assignment create",
                     "would run: az keyvault certificate create", "would run: az iot dps enrollment-group create",
                     "--iot-hubs <iot hub host names>",
                     "/api/allocate?code=***", "would call https://func-tok42.azurewebsites.net/api/health",
                     "nothing was changed"):
        assert expected in text, expected


def test_what_if_after_a_deployment_changes_nothing(signed):
    fake, _sign = signed
    before = fake.state
    run = fake.run("--what-if")
    assert run.returncode == 0, run.output
    assert mutations(run) == []
    assert fake.state == before
    assert "sensors-west: present, webhook and hubs current" in run.output


def hub_rows(run) -> dict[str, str]:
    """The iot_hubs rows one run of deploy.sh wrote (sqlcmd -i upsert-hub.sql -v ...): host name -> region."""
    rows = []
    for call in run.calls:
        argv = call["argv"]
        if call["tool"] == "sqlcmd" and "-i" in argv and argv[argv.index("-i") + 1].endswith("/upsert-hub.sql"):
            rows.append(dict(v.split("=", 1) for v in argv[argv.index("-v") + 1:]))
    assert len(rows) == len({row["HOST_NAME"] for row in rows}), "one row per hub"
    return {row["HOST_NAME"]: row["REGION"] for row in rows}


def test_every_hub_gets_its_row_in_its_own_region(first_deployment):
    _fake, _sign, run, _state = first_deployment
    assert run.returncode == 0, run.output
    assert hub_rows(run) == dict(hub_names(1)) == {
        f"iot-{region}-tok42.azure-devices.net": region for region in REGIONS}


def test_two_hubs_per_region_deploy_six_hubs_each_in_its_region(signed, tmp_path):
    # Issue 20: a hub more in each region is a parameter and a deploy run. The first hub of each region keeps its
    # name; each hub's iot_hubs row takes its region from the deployment outputs (IOT_HUB_REGIONS), not from its
    # position beside REGIONS; the enrollment groups already in DPS are given every hub.
    fake, sign = signed
    facilities = tmp_path / "facilities.csv"
    facilities.write_text("facility_code,name,region,manager_email\nFAC01,Plant West,west,m@example.com\n"
                          "FAC02,Plant East,east,e@example.com\n")
    run = fake.run(*sign, "--hubs-per-region", "2", "--facilities", str(facilities))
    assert run.returncode == 0, run.output
    hubs = hub_names(2)
    assert [host for host, _region in hubs[:3]] == list(LINKED_HUBS)  # the first three, unchanged
    assert [host for host, _region in hubs[3:]] == [
        f"iot-{region}2-tok42.azure-devices.net" for region in ("west", "central", "east")]
    for params in (dict(item.split("=", 1) for group in args["parameters"] for item in group)
                   for args in run.parsed("deployment sub create")):
        assert params["hubsPerRegion"] == "2"
    assert "hubsPerRegion=2 (option)" in run.output
    state = fake.state
    assert hub_rows(run) == dict(hubs)
    preferred = {s["variables"]["CODE"]: s["variables"]["PREFERRED_HUB"]
                 for s in state["sql_scripts"] if s["script"] == "upsert-facility.sql"}
    assert preferred == {"FAC01": "iot-west-tok42.azure-devices.net", "FAC02": "iot-east-tok42.azure-devices.net"}
    updated = run.parsed("iot dps enrollment-group update")
    assert sorted(args["enrollment_id"] for args in updated) == sorted(f"sensors-{r}" for r in REGIONS)
    assert all(args["iot_hubs"] == [host for host, _region in hubs] for args in updated)
    assert all(group["iotHubs"] == [host for host, _region in hubs] for group in state["enrollment_groups"].values())
    again = fake.run(*sign, "--hubs-per-region", "2")
    assert again.returncode == 0, again.output
    assert "az iot dps enrollment-group update" not in mutations(again)
    assert "sensors-west: present, webhook and hubs current" in again.output


def test_hubs_per_region_comes_from_the_environment_like_every_bound_parameter(fake_azure):
    run = fake_azure.run("--what-if", env={"HUBS_PER_REGION": "3"})
    assert run.returncode == 0, run.output
    (what_if,) = run.parsed("deployment sub what-if")
    assert "hubsPerRegion=3" in what_if["parameters"][0]
    for bad in ("0", "two"):
        refused = fake_azure.run("--what-if", "--hubs-per-region", bad)
        assert refused.returncode == 64 and "--hubs-per-region must be a number" in refused.stderr
        assert refused.calls == []


def test_the_deployment_outputs_are_read_as_one_tab_separated_row(signed):
    # `-o tsv` prints a list one item per line (knack): the outputs query asks for a list holding one list, and the
    # fake prints what the real CLI prints for it. An empty output keeps its place in the row.
    fake, sign = signed
    run = fake.run(*sign)
    assert run.returncode == 0, run.output
    queries = [args["query"] for args in run.parsed("deployment sub create") + run.parsed("deployment sub show")]
    assert queries and all(q.startswith("properties.outputs.[[") and q.endswith("]]") for q in queries)
    done, _call = fake.az("deployment", "sub", "show", "--name", "onboarding-demo", "--query", queries[0], "-o", "tsv")
    row = done.stdout.rstrip("\n")
    assert "\n" not in row and row.count("\t") == queries[0].count(",")
    assert row.split("\t")[-2] == ""  # AZURE_VNET_NAME: empty without private networking
    # The old query, a flat list, prints one output per line: read as one row it gave wrong names and values.
    flat = queries[0].replace("[[", "[").replace("]]", "]")
    done, _call = fake.az("deployment", "sub", "show", "--name", "onboarding-demo", "--query", flat, "-o", "tsv")
    assert done.stdout.count("\n") == queries[0].count(",") + 1 and "\t" not in done.stdout
    # What deploy.sh read from the row: the names that reach the later steps.
    assert "resource group rg-demo, function app func-tok42" in run.output
    assert all(group["webhookUrl"] == "https://func-tok42.azurewebsites.net/api/allocate?code=function-key-allocate"
               for group in fake.state["enrollment_groups"].values())


def test_the_signed_in_account_is_read_as_one_row(fake_azure):
    # `az account show --query "[id, user.name, user.type]" -o tsv` prints three lines; read as one row, the
    # principal's name and type were empty, so a service principal was taken for a user.
    fake_azure.update(principal_kind="servicePrincipal")
    run = fake_azure.run("--what-if")
    assert run.returncode == 0, run.output
    (account,) = run.parsed("account show")
    assert account["query"] == "[[id, user.name, user.type]]" and account["output"] == "tsv"
    assert f"subscription {SUBSCRIPTION} as operator@example.com (servicePrincipal)" in run.output
    done, _call = fake_azure.az("account", "show", "--query", "[id, user.name, user.type]", "-o", "tsv")
    assert done.stdout == f"{SUBSCRIPTION}\noperator@example.com\nservicePrincipal\n"


def test_not_logged_in_is_a_clear_error(fake_azure):
    fake_azure.update(logged_in=False)
    run = fake_azure.run()
    assert run.returncode == 2 and "az login" in run.stderr
    assert mutations(run) == []


def test_missing_azure_iot_extension_is_a_clear_error(fake_azure):
    fake_azure.update(extensions=[])
    run = fake_azure.run()
    assert run.returncode == 3 and "az extension add --name azure-iot" in run.stderr
    assert mutations(run) == []


@pytest.mark.parametrize("version", ["0.23.1", "0.9.9", "0.21.5"])
def test_an_azure_iot_extension_older_than_0_24_is_a_clear_error(fake_azure, version):
    # Before 0.24.0 --iot-hubs took one string: the hub-per-argument form would stop at "unrecognized arguments".
    fake_azure.update(azure_iot_version=version)
    run = fake_azure.run()
    assert run.returncode == 3 and f"{version} is older than 0.24.0" in run.stderr
    assert "az extension update --name azure-iot" in run.stderr
    assert mutations(run) == []


@pytest.mark.parametrize("version", ["0.24.0", "0.25.0", "1.0.0b1", "0.110.2"])
def test_azure_iot_0_24_or_later_passes_the_preflight(fake_azure, version):
    fake_azure.update(azure_iot_version=version)
    run = fake_azure.run("--what-if")
    assert run.returncode == 0, run.output


@pytest.mark.parametrize("taken", ["kv-tok42", "sttok42", "func-tok42", "sql-tok42", "iot-west-tok42", "provs-tok42"])
def test_name_collision_is_a_clear_error_before_any_change(fake_azure, taken):
    fake_azure.update(taken_names=[taken])
    run = fake_azure.run()
    assert run.returncode == 4, run.output
    assert "name collision" in run.stderr and taken in run.stderr
    assert mutations(run) == []


def test_soft_deleted_key_vault_is_a_clear_error(fake_azure):
    fake_azure.update(deleted_vaults=["kv-tok42"])
    run = fake_azure.run()
    assert run.returncode == 4 and "az keyvault recover --name kv-tok42" in run.stderr


def test_sql_firewall_is_opened_for_this_run_only(fake_azure):
    fake_azure.update(sql_blocked_ip="203.0.113.7")
    run = fake_azure.run()
    assert run.returncode == 0, run.output
    assert mutations(run).count("az sql server firewall-rule create") == 1
    assert mutations(run).count("az sql server firewall-rule delete") == 1
    assert fake_azure.state["firewall_rules"] == []
    assert fake_azure.state["sql_migrations"] == MIGRATIONS


def test_facilities_are_loaded_from_a_validated_csv(fake_azure, tmp_path):
    csv = tmp_path / "facilities.csv"
    csv.write_text("facility_code,name,region,manager_email\nFAC01,Portland Assembly,west,m1@example.com\n"
                   "FAC09,Columbus Welding,east,m9@example.com\n")
    run = fake_azure.run("--facilities", str(csv))
    assert run.returncode == 0, run.output
    loaded = [s["variables"] for s in fake_azure.state["sql_scripts"] if s["script"] == "upsert-facility.sql"]
    assert [(f["CODE"], f["PREFERRED_HUB"]) for f in loaded] == [
        ("FAC01", "iot-west-tok42.azure-devices.net"), ("FAC09", "iot-east-tok42.azure-devices.net")]
    csv.write_text("FAC02,Robert'); DROP TABLE facilities;--,west,m@example.com\n")
    run = fake_azure.run("--facilities", str(csv))
    assert run.returncode == 64 and "bad name" in run.stderr


def test_usage_errors(fake_azure):
    done = subprocess.run(["bash", str(DEPLOY), "--bogus"], capture_output=True, text=True, check=False)
    assert done.returncode == 64 and "Usage" in done.stderr
    done = subprocess.run(["bash", str(DEPLOY), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "--what-if" in done.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_shellcheck_is_clean():
    done = subprocess.run(["shellcheck", "-x", str(DEPLOY)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


# --- CA rotation (docs/ca-rotation.md): --rotate-ca (stage 1), --promote-ca (stage 2) ------------------------------

WEST = "intermediate-ca-west"
ROTATION_MUTATIONS = ["az keyvault certificate create", "az keyvault certificate pending merge",
                      "az iot dps certificate create", "az iot dps enrollment-group update"]


def rotated_name(state: dict) -> str:
    """The dated DPS name stage 1 gives the new version: the day of its notBefore."""
    import datetime as dt

    not_before = dt.datetime.fromisoformat(state["kv_versions"][WEST][-1]["notBefore"])
    return f"{WEST}-{not_before:%Y%m%d}"


def test_rotation_stage_1_adds_a_new_key_version_as_the_groups_secondary_ca(signed):
    fake, sign = signed
    before = fake.state
    run = fake.run("--rotate-ca", "west", *sign)
    assert run.returncode == 0, run.output
    assert mutations(run) == ROTATION_MUTATIONS
    assert "sqlcmd" not in run.commands and "az deployment sub create" not in run.commands
    state = fake.state
    # Key Vault: a second version of the same certificate, with a new key (the policy file's reuseKey false).
    (create,) = run.parsed("keyvault certificate create")
    assert create["name"] == WEST and state["policies"][WEST]["keyProperties"]["reuseKey"] is False
    old, new = state["kv_versions"][WEST]
    assert [old] == before["kv_versions"][WEST] and new["status"] == "complete"
    assert thumbprint(new["pem"]) != thumbprint(old["pem"])
    # DPS: the new version, downloaded by its version id, registered verified under a dated name.
    name = rotated_name(state)
    (download,) = run.parsed("keyvault certificate download")
    assert download["name"] == WEST and download["version"] == new["version"] and download["encoding"] == "PEM"
    (registered,) = run.parsed("iot dps certificate create")
    assert registered["certificate_name"] == name and registered["verified"] is True
    assert state["dps_certs"][name] is True and state["dps_thumbprints"][name] == thumbprint(new["pem"])
    assert state["dps_thumbprints"][WEST] == thumbprint(old["pem"])
    # The group: the new CA as its secondary, everything else as it was; the other regions untouched.
    (update,) = run.parsed("iot dps enrollment-group update")
    assert update["enrollment_id"] == "sensors-west" and update["secondary_root_ca_name"] == name
    assert not {"root_ca_name", "webhook_url", "allocation_policy", "iot_hubs"} & set(update)
    group = state["enrollment_groups"]["sensors-west"]
    assert group["caReferences"] == {"primary": WEST, "secondary": name}
    assert group == {**before["enrollment_groups"]["sensors-west"], "caReferences": group["caReferences"]}
    for region in ("central", "east"):
        assert state["enrollment_groups"][f"sensors-{region}"] == before["enrollment_groups"][f"sensors-{region}"]
        assert state["kv_versions"][f"intermediate-ca-{region}"] == before["kv_versions"][f"intermediate-ca-{region}"]
    # The merged chain is kept under the version's name; nothing waits under .rotation.
    assert (fake.ca_dir / f"{name}.pem").is_file() and not (fake.ca_dir / f"{WEST}.rotation.pem").exists()
    assert "infra/deploy.sh -e demo --promote-ca west" in run.output


def test_rotation_stage_1_run_again_changes_nothing(signed):
    fake, sign = signed
    assert fake.run("--rotate-ca", "west", *sign).returncode == 0
    after_first = fake.state
    again = fake.run("--rotate-ca", "west", *sign)
    assert again.returncode == 0, again.output
    assert mutations(again) == [] and fake.state == after_first
    assert f"the secondary CA {rotated_name(after_first)} is its current Key Vault version" in again.output
    # Nor does a deployment: the CA reference stays, the webhook is current, no new Key Vault version.
    deploy = fake.run(*sign)
    assert deploy.returncode == 0, deploy.output
    assert "az keyvault certificate create" not in mutations(deploy)
    assert "az iot dps enrollment-group update" not in mutations(deploy)
    for key in ("enrollment_groups", "kv_versions", "dps_certs", "dps_thumbprints"):
        assert fake.state[key] == after_first[key], key


def test_rotation_stage_1_waits_for_the_offline_root_and_goes_on_where_it_stopped(signed):
    fake, sign = signed
    run = fake.run("--rotate-ca", "west")
    assert run.returncode == 0, run.output
    assert mutations(run) == ["az keyvault certificate create"]
    csr = fake.ca_dir / f"{WEST}.rotation.csr"
    assert csr.read_text().startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert "offline root" in run.stderr and f"{WEST}.rotation.pem and run again" in run.stderr
    assert [v["status"] for v in fake.state["kv_versions"][WEST]] == ["complete", "pending"]
    assert "secondary" not in fake.state["enrollment_groups"]["sensors-west"]["caReferences"]
    waiting = fake.run("--rotate-ca", "west")  # still unsigned: no second new version
    assert waiting.returncode == 0 and mutations(waiting) == [] and "offline root" in waiting.stderr
    # A chain signed for another key (here the old version's) is refused by Key Vault; nothing moves on.
    (fake.ca_dir / f"{WEST}.rotation.pem").write_text(fake.state["kv_versions"][WEST][0]["pem"])
    wrong = fake.run("--rotate-ca", "west")
    assert wrong.returncode != 0, wrong.output
    assert "key of this instance doesn't match" in wrong.stderr
    assert mutations(wrong) == ["az keyvault certificate pending merge"]
    assert "secondary" not in fake.state["enrollment_groups"]["sensors-west"]["caReferences"]
    (fake.ca_dir / f"{WEST}.rotation.pem").unlink()
    signed_now = fake.run("--rotate-ca", "west", *sign)  # the root signs the CSR written before
    assert signed_now.returncode == 0, signed_now.output
    assert mutations(signed_now) == ROTATION_MUTATIONS[1:]
    state = fake.state
    assert [v["status"] for v in state["kv_versions"][WEST]] == ["complete", "complete"]
    assert state["enrollment_groups"]["sensors-west"]["caReferences"]["secondary"] == rotated_name(state)


def test_rotation_what_if_changes_nothing(signed):
    fake, _sign = signed
    before = fake.state
    run = fake.run("--rotate-ca", "west", "--what-if")
    assert run.returncode == 0, run.output
    assert mutations(run) == [] and fake.state == before
    assert not (fake.ca_dir / f"{WEST}.rotation.csr").exists()
    for expected in ("would run: az keyvault certificate create --vault-name kv-tok42 --name intermediate-ca-west",
                     "would run: az keyvault certificate pending merge",
                     f"would run: az iot dps certificate create --dps-name provs-tok42 --resource-group rg-demo "
                     f"--certificate-name {WEST}-<YYYYMMDD>",
                     "--enrollment-id sensors-west --secondary-root-ca-name intermediate-ca-west-<YYYYMMDD>",
                     "nothing was changed"):
        assert expected in run.output, expected


def test_rotation_stage_2_promotes_the_secondary_and_removes_it(signed):
    fake, sign = signed
    assert fake.run("--rotate-ca", "west", *sign).returncode == 0
    rotated = fake.state
    name = rotated_name(rotated)
    preview = fake.run("--promote-ca", "west", "--what-if")
    assert preview.returncode == 0 and mutations(preview) == [] and fake.state == rotated
    assert f"would run: az iot dps enrollment-group update --dps-name provs-tok42 --resource-group rg-demo " \
           f"--enrollment-id sensors-west --root-ca-name {name} --remove-secondary-certificate true" in preview.output
    run = fake.run("--promote-ca", "west")
    assert run.returncode == 0, run.output
    assert mutations(run) == ["az iot dps enrollment-group update"]
    (update,) = run.parsed("iot dps enrollment-group update")
    assert update["root_ca_name"] == name and update["remove_secondary_certificate"] is True
    group = fake.state["enrollment_groups"]["sensors-west"]
    assert group["caReferences"] == {"primary": name}
    assert group == {**rotated["enrollment_groups"]["sensors-west"], "caReferences": {"primary": name}}
    assert fake.state["dps_certs"][WEST] is True  # the old registration stays; no group references it
    # The next rotation starts from the promoted CA: a third version, a new name beside the one of the same day.
    again = fake.run("--rotate-ca", "west", *sign)
    assert again.returncode == 0, again.output
    assert mutations(again) == ROTATION_MUTATIONS
    assert fake.state["enrollment_groups"]["sensors-west"]["caReferences"] == {"primary": name,
                                                                                "secondary": f"{name}-2"}


def test_rotation_stage_2_without_a_secondary_is_a_one_line_error(signed):
    fake, _sign = signed
    before = fake.state
    run = fake.run("--promote-ca", "west")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "ERROR: sensors-west has no secondary CA to promote (its primary is intermediate-ca-west): run stage 1 "
        "first (--rotate-ca west)"]
    assert mutations(run) == [] and fake.state == before


def test_rotation_usage_errors(signed):
    fake, _sign = signed
    run = fake.run("--rotate-ca", "north")
    assert run.returncode == 64 and "the regions of demo are west,central,east" in run.stderr
    run = fake.run("--rotate-ca", "west", "--promote-ca", "west")
    assert run.returncode == 64 and "one stage per run" in run.stderr
    run = fake.run("--rotate-ca", "West Europe")
    assert run.returncode == 64 and "a region name such as west" in run.stderr
    # No location needed: the environment is deployed, its outputs name everything.
    done = subprocess.run(["bash", str(DEPLOY), "-e", "demo", "--ca-dir", str(fake.ca_dir), "--promote-ca", "west"],
                          capture_output=True, text=True, env=fake.environ(), check=False)
    assert done.returncode == 1 and "no secondary CA to promote" in done.stderr
    done = subprocess.run(["bash", str(DEPLOY), "--help"], capture_output=True, text=True, check=False)
    assert "--rotate-ca REGION" in done.stdout and "--promote-ca REGION" in done.stdout


def test_rotation_needs_a_deployed_environment(fake_azure):
    run = fake_azure.run("--rotate-ca", "west")
    assert run.returncode == 1 and "no deployment onboarding-demo" in run.stderr and mutations(run) == []
