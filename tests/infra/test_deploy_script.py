"""infra/deploy.sh against a recording fake `az` (and `sqlcmd`) on PATH: call order, idempotency, --what-if,
and the clear errors the issue asks for. The fake keeps a simulated subscription between runs."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.infra.bicep import INFRA
from tests.infra.conftest import DEPLOY
from tests.infra.fake_az import LINKED_HUBS
from tests.infra.scenarios import REGIONS, real_csrs, root_ca

MUTATING = {
    "az deployment sub create", "az functionapp deployment source config-zip", "az storage blob upload",
    "az keyvault certificate create", "az keyvault certificate pending merge", "az iot dps certificate create",
    "az iot dps certificate update", "az iot dps enrollment-group create", "az iot dps enrollment-group update",
    "az sql server firewall-rule create", "az sql server firewall-rule delete", "az role assignment create",
}
ORIGINAL_TABLES = ["facilities", "iot_hubs", "facility_overrides", "revocations", "provisioning_events"]


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
    assert scripts[0] == "schema_migrations.sql" and scripts[1].startswith("migration-0001.")
    assert scripts[2].startswith("migration-0002.") and scripts[3].startswith("migration-0003.")
    assert scripts[4].startswith("migration-0004.") and scripts[5] == "grant-function.sql"
    assert state["sql_migrations"] == ["0001", "0002", "0003", "0004"] and len(state["sql_tables"]) == 10
    assert state["sql_columns"] == ["certificates.certificate_pem", "certificates.partner_id", "certificates.lot",
                                   "certificates.issued_at"]
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
    assert state["sql_migrations"] == ["0001", "0002", "0003", "0004"]
    assert state["sql_created"] == ["hub_allocations", "certificates", "certificate_events", "partners"]


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
    assert "sensors-west: present, webhook current" in run.output


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
    assert fake_azure.state["sql_migrations"] == ["0001", "0002", "0003", "0004"]


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
