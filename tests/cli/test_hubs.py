"""`onboarding hubs list | add | set`: the iot_hubs rows through the CLI, over real SQL (SQLite ODBC), with the
registry statistics faked; bad input is one line `onboarding: error <code>: <message>` and exit 2."""

from __future__ import annotations

import json

from cli import main as cli_main
from shared.hubs import HubTable
from tests.cli.hub_fixtures import HUBS, NEW, fleet  # noqa: F401 - fleet: fixture


def run(*argv: str) -> int:
    return cli_main.main(list(argv))


def test_add_writes_the_row_and_list_shows_it(fleet, capsys):  # noqa: F811
    assert run("hubs", "add", NEW, "--region", "west", "--max-devices", "5000") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{NEW}: region west, max 5000 devices, 400000 messages a day, accepting")
    assert "note" not in out  # IOT_HUB_HOSTNAMES names it already
    row = HubTable(fleet).get(NEW)
    assert (row.region, row.max_devices, row.max_daily_messages, row.accepting) == ("west", 5000, 400000, True)

    fleet.counts.update({NEW: 12, "hub-west.azure-devices.net": 1999})
    assert run("hubs", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    west = [line for line in lines if line.startswith("west")]
    assert [line.split()[1:3] for line in west] == [["hub-west.azure-devices.net", "1999/2000"],
                                                    [NEW, "12/5000"]]
    assert all(line.split()[3] == "accepting" for line in lines)


def test_list_json_flags_hubs_the_app_does_not_use(fleet, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("IOT_HUB_HOSTNAMES", "hub-west.azure-devices.net,hub-central.azure-devices.net,"
                                            "hub-north.azure-devices.net")
    fleet.counts["hub-central.azure-devices.net"] = RuntimeError("statistics unavailable")
    assert run("--json", "hubs", "list") == 0
    data = json.loads(capsys.readouterr().out)
    by_host = {h["host"]: h for h in data["hubs"]}
    assert by_host["hub-east.azure-devices.net"]["configured"] is False
    assert by_host["hub-east.azure-devices.net"]["devicesFrom"] == "not_configured"
    assert by_host["hub-central.azure-devices.net"]["devicesFrom"] == "unavailable"
    assert by_host["hub-west.azure-devices.net"] == {
        "host": "hub-west.azure-devices.net", "region": "west", "maxDevices": 2000, "maxDailyMessages": 400000,
        "accepting": True, "devices": 0, "devicesFrom": "statistics", "configured": True}
    assert data["withoutRow"] == ["hub-north.azure-devices.net"]
    assert run("hubs", "list") == 0
    out = capsys.readouterr().out
    assert "not in IOT_HUB_HOSTNAMES: unused" in out and "no iot_hubs row" in out


def test_add_notes_a_hub_the_app_settings_do_not_name(fleet, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("IOT_HUB_HOSTNAMES", ",".join(HUBS))
    assert run("--json", "hubs", "add", NEW, "--region", "west", "--max-devices", "10",
               "--max-daily-messages", "800000", "--accepting", "false") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["accepting"] is False and data["maxDailyMessages"] == 800000
    assert data["note"].startswith(f"{NEW} is not in IOT_HUB_HOSTNAMES")


def test_set_accepting_and_limits(fleet, capsys):  # noqa: F811
    host = "hub-east.azure-devices.net"
    assert run("hubs", "set", host, "--accepting", "false") == 0
    assert "not accepting" in capsys.readouterr().out
    assert HubTable(fleet).get(host).accepting is False
    assert run("hubs", "set", host, "--accepting", "true", "--max-devices", "9000") == 0
    capsys.readouterr()
    row = HubTable(fleet).get(host)
    assert (row.accepting, row.max_devices, row.max_daily_messages) == (True, 9000, 400000)


def assert_refused(capsys, *argv: str, message: str) -> None:
    assert run(*argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onboarding: error invalid_request: "), captured.err
    assert message in lines[0]


def test_bad_input_is_one_line_and_exit_2(fleet, capsys):  # noqa: F811
    assert_refused(capsys, "hubs", "add", NEW, "--region", "north", "--max-devices", "10",
                   message="unknown region 'north' (known: central, east, west)")
    assert_refused(capsys, "hubs", "add", NEW, "--region", "west", "--max-devices", "-5",
                   message="--max-devices must be a whole number from 1 to 2147483647, got -5")
    assert_refused(capsys, "hubs", "add", NEW, "--region", "west", "--max-devices", "0", message="got 0")
    assert_refused(capsys, "hubs", "add", NEW, "--region", "west", "--max-devices", "10",
                   "--max-daily-messages", "3000000000", message="--max-daily-messages must be")
    assert_refused(capsys, "hubs", "add", "hub-west.azure-devices.net", "--region", "west", "--max-devices", "10",
                   message="hub hub-west.azure-devices.net already exists")
    assert_refused(capsys, "hubs", "add", "https://x.azure-devices.net/", "--region", "west", "--max-devices", "10",
                   message="is not a host name")
    assert_refused(capsys, "hubs", "set", "hub-nowhere.azure-devices.net", "--accepting", "false",
                   message="no hub hub-nowhere.azure-devices.net")
    assert_refused(capsys, "hubs", "set", "hub-west.azure-devices.net", message="nothing to change")
    assert_refused(capsys, "hubs", "set", "hub-west.azure-devices.net", "--max-devices", "-1",
                   message="--max-devices must be")
    assert HubTable(fleet).get(NEW) is None
    assert HubTable(fleet).get("hub-west.azure-devices.net").max_devices == 2000


def test_a_region_known_only_from_the_regional_cas_is_accepted(fleet, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("REGIONAL_CAS", "west=intermediate-ca-west,north=intermediate-ca-north")
    assert run("hubs", "add", "hub-north.azure-devices.net", "--region", "north", "--max-devices", "100") == 0
    assert HubTable(fleet).get("hub-north.azure-devices.net").region == "north"


def test_argparse_rejects_a_limit_that_is_not_a_number(fleet, capsys):  # noqa: F811
    try:
        run("hubs", "add", NEW, "--region", "west", "--max-devices", "many")
    except SystemExit as exc:
        assert exc.code == 2
    assert "invalid int value" in capsys.readouterr().err
