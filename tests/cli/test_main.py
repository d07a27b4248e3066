"""cli.main: argument parsing, and how a failure is reported (one line with a code, exit status, no traceback)."""

from __future__ import annotations

import re

import pytest

from cert_lifecycle.__main__ import translate
from cli import main as cli_main

ERROR_LINE = re.compile(r"onboarding: error [a-z_]+: \S.*")


@pytest.fixture
def fake_groups(monkeypatch):
    monkeypatch.setattr(cli_main, "GROUPS", (*cli_main.GROUPS, "tests.cli.fake_commands"))


def parse(*argv: str):
    return cli_main.build_parser().parse_args(list(argv))


# -- parsing ----------------------------------------------------------------------------------------------
def test_explain_takes_the_cn_a_certificate_linked_hubs_and_the_current_hub():
    args = parse("explain", "sensor-temp-FAC03-SN1", "--cert", "d.pem", "--linked-hub", "a", "--linked-hub", "b",
                 "--current-hub", "a")
    assert (args.cn, str(args.cert), args.linked_hubs, args.current_hub) == ("sensor-temp-FAC03-SN1", "d.pem",
                                                                             ["a", "b"], "a")
    assert (args.settings, args.json, args.debug) == (None, False, False)


@pytest.mark.parametrize("argv", [
    ["--json", "--debug", "--settings", "s.json", "preview", "sensor-temp-FAC03-SN1"],
    ["preview", "sensor-temp-FAC03-SN1", "--json", "--debug", "--settings", "s.json"],
    ["--json", "preview", "--settings", "s.json", "sensor-temp-FAC03-SN1", "--debug"],
])
def test_global_options_work_before_and_after_the_subcommand(argv):
    args = parse(*argv)
    assert (args.json, args.debug, str(args.settings), args.device_id) == (True, True, "s.json",
                                                                          "sensor-temp-FAC03-SN1")


def test_certs_subcommands_and_their_options():
    assert parse("certs", "status", "sensor-temp-FAC03-SN1").cn == "sensor-temp-FAC03-SN1"
    revoke = parse("certs", "revoke", "--serial", "1F", "--issuer", "intermediate-ca-west", "--reason", "keyCompromise")
    assert (revoke.serial_numbers, revoke.issuer, revoke.reason, revoke.device_ids, revoke.yes) == (
        ["1F"], "intermediate-ca-west", "keyCompromise", [], False)
    assert parse("certs", "revoke", "--device-id", "sensor-temp-FAC03-SN1").reason == "unspecified"
    assert parse("certs", "scan", "--at", "2027-06-01").at == "2027-06-01"
    assert parse("certs", "collect").run.__name__ == "run_collect"
    assert parse("certs", "refresh-crls").run.__name__ == "run_refresh_crls"
    assert parse("alerts", "--drain").drain is True
    assert parse("health").run.__module__ == "cli.health"


@pytest.mark.parametrize("argv", [[], ["explain"], ["certs"], ["nonsense"], ["certs", "scan", "--at"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main.main(argv)
    assert exit_.value.code == 2
    assert "usage: onboarding" in capsys.readouterr().err


def test_the_old_cert_lifecycle_commands_map_to_the_new_ones():
    assert translate(["scan", "--at", "2027-06-01"]) == ["certs", "scan", "--at", "2027-06-01", "--json"]
    assert translate(["--settings", "f.json", "collect"]) == ["--settings", "f.json", "certs", "collect", "--json"]
    assert translate(["refresh-crls"]) == ["certs", "refresh-crls"]
    assert translate(["alerts", "--drain", "--json"]) == ["alerts", "--drain", "--json"]


# -- reporting --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "code", "status"), [
    ("refusal", "unknown_facility", 2),
    ("setting", "configuration_error", 1),
    ("dependency", "dependency_unavailable", 1),
    ("bug", "internal_error", 1),
])
def test_a_failure_is_one_line_with_its_code_and_no_traceback(fake_groups, capsys, kind, code, status):
    assert cli_main.main(["fail", kind]) == status
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and ERROR_LINE.fullmatch(lines[0]), err
    assert lines[0].startswith(f"onboarding: error {code}: ")
    assert "Traceback" not in err and "noisy" not in err  # neither SDK log lines nor Python warnings


def test_a_dependency_failure_names_the_call_and_its_cause_on_one_line(fake_groups, capsys):
    cli_main.main(["fail", "dependency"])
    assert capsys.readouterr().err == ("onboarding: error dependency_unavailable: RuntimeError: template "
                                       "temperature-sensor.json: ServiceRequestError (ServiceRequestError: "
                                       "Connection refused)\n")


def test_debug_shows_the_traceback_and_the_logs_then_the_same_line(fake_groups, capsys):
    assert cli_main.main(["fail", "bug", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "noisy SDK retry warning" in err
    assert err.splitlines()[-1] == "onboarding: error internal_error: ValueError: something unexpected happened"


def test_a_refusal_that_is_the_answer_prints_the_answer_then_the_line(fake_groups, capsys):
    assert cli_main.main(["answer", "--refused"]) == 2
    out, err = capsys.readouterr()
    assert out == "answer 42\n"
    assert err == "onboarding: error certificate_revoked: serial 1F revoked\n"


def test_json_prints_the_data(fake_groups, capsys):
    assert cli_main.main(["--json", "answer"]) == 0
    assert capsys.readouterr() == ('{\n  "answer": 42\n}\n', "")


def test_a_settings_file_given_but_missing_is_a_configuration_error_except_for_the_old_entry_points(fake_groups,
                                                                                                    capsys):
    assert cli_main.main(["answer", "--settings", "missing.json"]) == 1
    assert capsys.readouterr().err == ("onboarding: error configuration_error: settings file missing.json does not "
                                       "exist\n")
    assert cli_main.run_alias(["answer", "--settings", "missing.json"]) == 0
