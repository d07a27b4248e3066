"""The fake `az` parses like the real CLI (argparse per command path, same options, nargs, required options and
choices), so deploy.sh's quoting mistakes and misspelt options fail a test; and it models every az command that
deploy.sh contains."""

from __future__ import annotations

import pytest

from tests.infra.fake_az import COMMANDS, EXTENSION, LINKED_HUBS
from tests.infra.scenarios import deploy_script_commands


def required_arguments(command: str) -> list[str]:
    """The command words and a value for each required option: the shortest line the parser accepts."""
    argv = command.split()
    for flags, kwargs in COMMANDS[command][1]:
        if kwargs.get("required"):
            argv += [flags[0], kwargs["choices"][0] if kwargs.get("choices") else "x"]
    return argv


def test_every_az_command_in_deploy_sh_is_modelled_by_the_fake():
    in_script = deploy_script_commands()
    assert {"account show", "rest", "iot dps enrollment-group create", "keyvault certificate pending merge",
            "sql server firewall-rule delete"} <= in_script  # the scan still finds calls of every shape
    assert in_script == set(COMMANDS), {"not modelled": in_script - set(COMMANDS),
                                        "modelled but not in deploy.sh": set(COMMANDS) - in_script}


def test_every_modelled_command_cites_where_its_options_are_defined():
    for command, (source, _options) in COMMANDS.items():
        assert source.startswith(("azure-cli command_modules/", EXTENSION)), command


def test_iot_hubs_takes_one_value_per_hub(fake_azure):
    group = ["iot", "dps", "enrollment-group", "create", "--dps-name", "provs-tok42", "--enrollment-id", "g"]
    done, call = fake_azure.az(*group, "--iot-hubs", *LINKED_HUBS, parse_only=True)
    assert done.returncode == 0, done.stderr
    assert call["args"]["iot_hubs"] == list(LINKED_HUBS)
    # The old deploy.sh line, --iot-hubs "${hubs}": one shell word, so one list entry with spaces in it.
    done, call = fake_azure.az(*group, "--iot-hubs", " ".join(LINKED_HUBS), parse_only=True)
    assert done.returncode == 0, done.stderr
    assert call["args"]["iot_hubs"] == [" ".join(LINKED_HUBS)]
    # action='extend': the option given twice adds up.
    done, call = fake_azure.az(*group, "--ih", LINKED_HUBS[0], "--iot-hubs", *LINKED_HUBS[1:], parse_only=True)
    assert call["args"]["iot_hubs"] == list(LINKED_HUBS)


def test_the_fake_dps_refuses_a_hub_list_given_as_one_word(fake_azure):
    fake_azure.update(dps_certs={"intermediate-ca-west": True})
    group = ["iot", "dps", "enrollment-group", "create", "--dps-name", "provs-tok42", "--enrollment-id", "g",
             "--root-ca-name", "intermediate-ca-west", "--allocation-policy", "custom", "--api-version", "2021-10-01",
             "--webhook-url", "https://func-tok42.azurewebsites.net/api/allocate?code=k"]
    done, _call = fake_azure.az(*group, "--iot-hubs", " ".join(LINKED_HUBS))
    assert done.returncode == 99 and "no linked IoT hub" in done.stderr
    assert "enrollment_groups" not in fake_azure.state or "g" not in fake_azure.state["enrollment_groups"]
    done, _call = fake_azure.az(*group, "--iot-hubs", *LINKED_HUBS)
    assert done.returncode == 0, done.stderr
    assert fake_azure.state["enrollment_groups"]["g"]["iotHubs"] == list(LINKED_HUBS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unknown_option_exits_2_as_in_the_real_cli(fake_azure, command):
    done, call = fake_azure.az(*required_arguments(command), parse_only=True)
    assert done.returncode == 0, done.stderr
    done, call = fake_azure.az(*required_arguments(command), "--no-such-option", "x", parse_only=True)
    assert done.returncode == 2
    assert "ERROR: unrecognized arguments: --no-such-option x" in done.stderr
    assert call["exit"] == 2 and "unrecognized arguments" in call["error"]


@pytest.mark.parametrize("command", sorted(c for c in COMMANDS if len(required_arguments(c)) > len(c.split())))
def test_a_missing_required_option_exits_2(fake_azure, command):
    done, _call = fake_azure.az(*command.split(), "--query", "id", parse_only=True)
    assert done.returncode == 2 and "the following arguments are required" in done.stderr


def test_a_value_outside_the_choices_exits_2_and_choices_ignore_case(fake_azure):
    download = ["keyvault", "certificate", "download", "--vault-name", "kv", "--name", "ca", "--file", "ca.pem"]
    done, _call = fake_azure.az(*download, "--encoding", "CER", parse_only=True)
    assert done.returncode == 2 and "invalid choice: 'CER'" in done.stderr
    done, call = fake_azure.az(*download, "--encoding", "pem", "-o", "TSV", parse_only=True)
    assert done.returncode == 0 and call["args"]["encoding"] == "PEM" and call["args"]["output"] == "tsv"
    done, _call = fake_azure.az("iot", "dps", "certificate", "create", "--dps-name", "d", "--certificate-name", "c",
                                "--path", "p", "--verified", "yes", parse_only=True)
    assert done.returncode == 2 and "invalid choice: 'yes'" in done.stderr


def test_an_unknown_command_exits_2(fake_azure):
    done, call = fake_azure.az("iot", "dps", "enrollment-group", "crate", "--enrollment-id", "g", parse_only=True)
    assert done.returncode == 2 and "misspelled or not recognized" in done.stderr and call["exit"] == 2


# Results and what knack's format_tsv (knack 0.14.0, azure-cli 2.91.0) prints for them, final newline dropped; the
# opt-in tests/infra/test_real_az_cli.py checks the same results against the installed knack.
TSV_CASES = [
    (["a", "", True, None], "a\n\ntrue\nNone"),           # "[a, b, c, d]": one value per line
    ([["a", "", True, None]], "a\t\tTrue\tNone"),         # "[[a, b, c, d]]": one tab-separated row
    ("x", "x"), (True, "true"), (3, "3"), ([True, False], "true\nfalse"),
    ({"b": 1, "a": 2}, "2\t1"), ([{"b": 1, "a": 2}], "2\t1"), ([["u", ["h1", "h2"]]], "u\t2"),
    (["u", ["h1", "h2"]], "u\nh1\th2"), (["u", None], "u\nNone"), ([], ""), (None, ""),
]


@pytest.mark.parametrize(("result", "printed"), TSV_CASES)
def test_the_fake_prints_tsv_as_knack_does(result, printed):
    from tests.infra.fake_az import tsv

    assert tsv(result) == printed


def test_the_fake_applies_queries_as_jmespath_does():
    from tests.infra.fake_az import search

    doc = {"id": "s", "user": {"name": "n", "type": "t"}, "properties": {"outputs": {"A": {"value": 1}}}}
    assert search(doc, "[id, user.name, user.type]") == ["s", "n", "t"]
    assert search(doc, "[[id, user.name, user.type]]") == [["s", "n", "t"]]
    assert search(doc, "properties.outputs.[[A.value, B.value]]") == [[1, None]]
    assert search(doc, "user.name") == "n" and search(doc, "missing.key") is None
