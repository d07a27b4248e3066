"""One source of truth for the parameters of main.bicep: infra/main.parameters.json binds each to an environment
variable, azd fills it from its environment, and deploy.sh resolves it the same way (option > environment > azd
environment > the file's default), so the postdeploy hook deploys what `azd provision` deployed and never resets a
value it was given (issue: alert e-mail, e-mail switch, always-ready instances, the SQL Entra admin)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.infra.bicep import INFRA, REPO, load
from tests.infra.conftest import DEPLOY

BINDING = re.compile(r"^\$\{([A-Z][A-Z0-9_]*)(?:=([^}\"]*))?\}$")
PARAMETERS = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]


def hook_command() -> str:
    text = (REPO / "azure.yaml").read_text()
    return re.search(r"^\s+postdeploy:\n\s+posix:\n\s+shell: sh\n\s+run: (.+)$", text, re.M).group(1)


def run_hook(fake, extra_env: dict[str, str], *args: str):
    """The azure.yaml postdeploy command as azd runs it: sh, from the project root, with the azd environment's
    values exported (AZURE_ENV_NAME, AZURE_LOCATION and the rest)."""
    fake.log_file.write_text("")
    env = {**fake.environ(), "AZURE_ENV_NAME": "demo", "AZURE_LOCATION": "westeurope", **extra_env}
    command = f"{hook_command()} --ca-dir '{fake.ca_dir}' {' '.join(args)}"
    done = subprocess.run(["sh", "-c", command], cwd=REPO, capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    return done, fake.calls()


def what_if_parameters(calls) -> dict[str, str]:
    (call,) = [c for c in calls if c.get("command") == "deployment sub what-if"]
    return dict(item.split("=", 1) for group in call["args"]["parameters"] for item in group)


def create_parameters(calls) -> list[dict[str, str]]:
    return [dict(item.split("=", 1) for group in c["args"]["parameters"] for item in group)
            for c in calls if c.get("command") == "deployment sub create"]


def test_every_binding_names_a_variable_and_matches_the_bicep_default():
    main = load("main.bicep")
    for name, entry in PARAMETERS.items():
        match = BINDING.match(entry["value"])
        assert match, f"{name}: the value must be ${{VARIABLE}} or ${{VARIABLE=default}}, is {entry['value']!r}"
        default = match.group(2)
        bicep_default = main.parameters[name].get("default")
        if default is not None and bicep_default is not None:
            expected = str(bicep_default).lower() if isinstance(bicep_default, bool) else str(bicep_default)
            assert default == expected, f"{name}: main.parameters.json default {default!r}, main.bicep {expected!r}"


def test_deploy_sh_reads_the_same_bindings():
    done = subprocess.run(["bash", "-c", f'source "{DEPLOY}"; parameter_bindings'], capture_output=True, text=True,
                          check=True)
    read = {line.split("|")[0]: line.split("|")[1:] for line in done.stdout.splitlines()}
    assert set(read) == set(PARAMETERS)
    for name, (variable, default) in read.items():
        match = BINDING.match(PARAMETERS[name]["value"])
        assert variable == match.group(1)
        assert default == ("" if match.group(2) is None else f"={match.group(2)}")


def test_the_hook_deploys_the_azd_environment_s_values(fake_azure):
    # azd exports its environment's values to the hook: deploy.sh passes them on instead of its defaults.
    values = {"ALERT_EMAIL": "ops@example.com", "ENABLE_EMAIL": "true", "ALWAYS_READY_INSTANCES": "2",
              "AZURE_PRINCIPAL_ID": "33333333-3333-3333-3333-333333333333", "ESCALATION_EMAIL": "ciso@example.com"}
    done, calls = run_hook(fake_azure, values)
    assert done.returncode == 0, done.stdout + done.stderr
    for params in create_parameters(calls):
        assert params["alertEmail"] == "ops@example.com" and params["enableEmail"] == "true"
        assert params["alwaysReadyInstances"] == "2" and params["escalationEmail"] == "ciso@example.com"
        assert params["principalId"] == "33333333-3333-3333-3333-333333333333"
        # azd provisions with the file's default name when AZURE_PRINCIPAL_NAME is unset; so does deploy.sh (it no
        # longer puts the signed-in user's name there, which made the SQL admin flip between the two).
        assert params["principalName"] == "onboarding-deployer" and params["principalType"] == "User"
        assert params["environmentName"] == "demo" and params["location"] == "westeurope"
    assert len(create_parameters(calls)) == 2
    assert "alertEmail=ops@example.com ($ALERT_EMAIL)" in done.stdout


def test_nothing_given_means_the_file_defaults_and_the_signed_in_principal(fake_azure):
    run = fake_azure.run("--what-if")
    assert run.returncode == 0, run.output
    params = what_if_parameters(run.calls)
    assert params["alertEmail"] == "" and params["enableEmail"] == "false" and params["alwaysReadyInstances"] == "1"
    assert params["vnetEnabled"] == "false" and params["sqlAllowAzureServices"] == "true"
    assert params["principalId"] == "11111111-1111-1111-1111-111111111111" and params["principalType"] == "User"
    assert params["principalName"] == "onboarding-deployer"


def test_options_win_over_the_environment_which_wins_over_azd_env_get_values(fake_azure):
    fake_azure.with_azd({"demo": {"ALERT_EMAIL": "azd@example.com", "ALWAYS_READY_INSTANCES": "3",
                                  "AZURE_PRINCIPAL_NAME": "Platform Team", "ENABLE_EMAIL": "true"}})
    run = fake_azure.run("--what-if", "--alert-email", "option@example.com", env={"ALWAYS_READY_INSTANCES": "4"})
    assert run.returncode == 0, run.output
    assert [c["argv"] for c in run.calls if c["tool"] == "azd"] == [["env", "get-values", "--environment", "demo"]]
    params = what_if_parameters(run.calls)
    assert params["alertEmail"] == "option@example.com"          # option
    assert params["alwaysReadyInstances"] == "4"                 # environment
    assert params["principalName"] == "Platform Team"            # azd env get-values
    assert params["enableEmail"] == "true"
    assert "azd environment demo: 4 value(s)" in run.output


def test_an_azd_value_with_quotes_and_backslashes_is_read_as_azd_wrote_it(fake_azure):
    fake_azure.with_azd({"demo": {"AZURE_PRINCIPAL_NAME": 'Ops \\"Team\\" \\\\ West'}})
    run = fake_azure.run("--what-if")
    assert run.returncode == 0, run.output
    assert what_if_parameters(run.calls)["principalName"] == 'Ops "Team" \\ West'


def test_no_azd_environment_of_that_name_is_no_error(fake_azure):
    fake_azure.with_azd({"other": {"ALERT_EMAIL": "x@example.com"}})
    run = fake_azure.run("--what-if")
    assert run.returncode == 0, run.output
    assert what_if_parameters(run.calls)["alertEmail"] == ""


def test_dash_p_gives_any_parameter_and_bound_ones_through_their_variable(fake_azure):
    run = fake_azure.run("--what-if", "-p", "iotHubUnits=2", "-p", "vnetEnabled=true", "--always-ready", "0")
    assert run.returncode == 0, run.output
    params = what_if_parameters(run.calls)
    assert params["iotHubUnits"] == "2" and params["vnetEnabled"] == "true" and params["alwaysReadyInstances"] == "0"
    for refused in ("subscribeDeviceCreated=true", "location=x", "novalue"):
        bad = fake_azure.run("--what-if", "-p", refused)
        assert bad.returncode == 64 and bad.calls == []


@pytest.mark.parametrize("private", [False, True])
def test_what_if_works_for_both_values_of_the_private_network_switch(fake_azure, private):
    run = fake_azure.run("--what-if", *(["--private-network"] if private else []))
    assert run.returncode == 0, run.output
    params = what_if_parameters(run.calls)
    assert params["vnetEnabled"] == ("true" if private else "false")
    assert ("Private networking: the next steps reach SQL" in run.output) is private
    assert "nothing was changed" in run.output and "deployments" not in fake_azure.state


def test_a_private_deployment_that_cannot_reach_sql_says_where_to_run_from(fake_azure):
    fake_azure.update(sql_blocked_ip="203.0.113.7", sql_private=True)
    run = fake_azure.run("--private-network")
    assert run.returncode == 5
    assert "private endpoint" in run.stderr and "vnet-tok42" in run.stderr
