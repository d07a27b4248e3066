"""`onboarding hubs ...`: the IoT hubs as data (the iot_hubs table, shared/hubs.py): list, add, set.

A hub takes devices once three things name it (README "Adding a hub"): DPS links it (in Azure: the deployment), the
app settings list it (IOT_HUB_HOSTNAMES, with the app's identity granted on it: the deployment), and its row here
gives its region and limits. `add` writes the row; `set --accepting false` stops new devices going to a hub (its
devices stay), `set --max-devices N` changes its limit. The webhook reads the rows again within
CAPACITY_CACHE_TTL_SECONDS (60 s).
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from cli.output import Outcome
from shared.errors import OnboardingError
from shared.hubs import S1_DAILY_MESSAGES


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def register(commands, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("hubs", parents=[common], help="IoT hubs and their limits: list, add, set",
                                description=__doc__)
    hubs = group.add_subparsers(dest="hubs_command", required=True, metavar="SUBCOMMAND")
    listed = hubs.add_parser("list", parents=[common], help="every hub: region, devices against its limit, accepting")
    listed.set_defaults(run=run_list)
    add = hubs.add_parser("add", parents=[common], help="add a hub's row (region and limits)")
    add.add_argument("host", metavar="HOST", help="the hub's host name, e.g. iot-west2-abc.azure-devices.net")
    add.add_argument("--region", required=True, help="a facility region, e.g. west")
    add.add_argument("--max-devices", type=int, required=True, metavar="N", help="devices the hub may hold")
    add.add_argument("--max-daily-messages", type=int, default=S1_DAILY_MESSAGES, metavar="M",
                     help=f"messages a day (default {S1_DAILY_MESSAGES:,}: one S1 unit)")
    add.add_argument("--accepting", type=_bool, default=True, metavar="true|false",
                     help="takes new devices (default true)")
    add.set_defaults(run=run_add)
    change = hubs.add_parser("set", parents=[common], help="change a hub's accepting flag or limits")
    change.add_argument("host", metavar="HOST")
    change.add_argument("--accepting", type=_bool, metavar="true|false", help="false: no new devices go there")
    change.add_argument("--max-devices", type=int, metavar="N")
    change.add_argument("--max-daily-messages", type=int, metavar="M")
    change.set_defaults(run=run_set)


def _table():
    from shared.bootstrap import services
    from shared.hubs import HubTable

    return HubTable(services().database)


def _configured_hosts() -> list[str] | None:
    """IOT_HUB_HOSTNAMES (or the connection strings' hosts); None when neither is set."""
    from shared.bootstrap import services
    from shared.config import SettingError

    try:
        return services().settings.iot_hub_host_names
    except SettingError:
        return None


def _ca_regions() -> list[str]:
    from shared.bootstrap import services
    from shared.config import SettingError

    try:
        return [ca.region for ca in services().settings.regional_cas]
    except SettingError:
        return []


def _not_used_note(host: str, configured: list[str] | None) -> str | None:
    if configured is not None and host in configured:
        return None
    return (f"{host} is not in IOT_HUB_HOSTNAMES: the app does not use it until the deployment links it to DPS, grants "
            "the app's identity on it and lists it there (README, 'Adding a hub')")


def render_list(data: dict[str, Any], out: TextIO) -> None:
    for h in data["hubs"]:
        devices = "?" if h["devices"] is None else str(h["devices"])
        state = "accepting" if h["accepting"] else "not-accepting"
        flag = "" if h["configured"] else "  (not in IOT_HUB_HOSTNAMES: unused)"
        flag += "  (statistics unavailable)" if h["devicesFrom"] == "unavailable" else ""
        flag += "  (estimate)" if h["devicesFrom"] == "estimate" else ""
        print(f"{h['region']:<10} {h['host']:<48} {devices:>8}/{h['maxDevices']:<8} {state}{flag}", file=out)
    for host in data["withoutRow"]:
        print(f"{'?':<10} {host:<48} {'':>8} no iot_hubs row: takes no device (onboarding hubs add)", file=out)
    if not data["hubs"] and not data["withoutRow"]:
        print("no hubs", file=out)


def run_list(args: argparse.Namespace) -> Outcome:
    from capacity.service import CapacityPlanner
    from capacity.settings import CapacitySettings
    from shared.bootstrap import services
    from shared.retry import RetryPolicy

    configured = _configured_hosts() or []
    svc = services()
    hub = svc.iothub(RetryPolicy(attempts=2, base_s=0.5, budget_s=10))
    counts = CapacityPlanner(svc.database, hub.device_count, configured, CapacitySettings()).hub_counts()
    on_record = {c.hub.host_name for c in counts}
    return Outcome({"hubs": [c.to_dict() for c in counts],
                    "withoutRow": [h for h in configured if h not in on_record]}, render_list)


def render_row(data: dict[str, Any], out: TextIO) -> None:
    state = "accepting" if data["accepting"] else "not accepting"
    print(f"{data['host']}: region {data['region']}, max {data['maxDevices']} devices, "
          f"{data['maxDailyMessages']} messages a day, {state}", file=out)
    if data.get("note"):
        print(f"note: {data['note']}", file=out)


def run_add(args: argparse.Namespace) -> Outcome:
    table = _table()
    row = table.add(args.host, args.region, args.max_devices, args.max_daily_messages, accepting=args.accepting,
                    regions=table.known_regions(_ca_regions()))
    return Outcome({**row.to_dict(), "note": _not_used_note(row.host_name, _configured_hosts())}, render_row)


def run_set(args: argparse.Namespace) -> Outcome:
    if args.accepting is None and args.max_devices is None and args.max_daily_messages is None:
        raise OnboardingError("invalid_request", "nothing to change: give --accepting, --max-devices or "
                                                 "--max-daily-messages")
    row = _table().update(args.host.strip(), accepting=args.accepting, max_devices=args.max_devices,
                          max_daily_messages=args.max_daily_messages)
    return Outcome({**row.to_dict(), "note": _not_used_note(row.host_name, _configured_hosts())}, render_row)
