"""`onboarding capacity`: the daily capacity report (capacity/), now: per region the devices on its accepting hubs
against their limits, allocations per day (the audit), days until full, status and the hubs to add; then the total.
Nothing is sent: the alert the daily timer would send is shown with --json (`alert`)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from cli.output import Outcome


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("capacity", parents=[common], help="hub capacity per region: use, growth, days "
                                 "until full, hubs to add", description=__doc__)
    parser.set_defaults(run=run)


def _line(r: dict[str, Any]) -> str:
    used = f"{r['devices']:>7}/{r['limit']:<7}" + (f" {r['utilisation']:>5.0%}" if r["utilisation"] is not None
                                                   else "     -")
    days = "-" if r["daysToFull"] is None else f"{r['daysToFull']:g}"
    full_on = r["fullOn"] or "-"
    add = "?" if r["hubsToAdd"] is None else str(r["hubsToAdd"])
    return (f"{r['region']:<10} {r['status']:<5} hubs {r['acceptingHubs']}/{r['hubs']:<3} {used}  "
            f"{r['growthPerDay']:>8g}/day  full in {days:>6} days ({full_on})  add {add}")


def render(data: dict[str, Any], out: TextIO) -> None:
    t = data["thresholds"]
    print(f"capacity on {data['date']} (warn at {t['warnUtilisation']:.0%} or {t['warnDays']:g} days; hubs to add "
          f"for {t['headroomDays']:g} days of growth; growth: mean of {data['total']['windowDays']} days)", file=out)
    print(f"{'region':<10} {'state':<5} accepting/hubs  devices/limit  use   growth        projection", file=out)
    for r in data["regions"]:
        print(_line(r), file=out)
    print(_line(data["total"]), file=out)
    for note in data["notes"]:
        print(f"note: {note}", file=out)


def run(args: argparse.Namespace) -> Outcome:
    from capacity.projection import alert_message
    from capacity.wiring import capacity

    cap = capacity()
    report, counts = cap.planner.report()
    data = report.to_dict()
    data["hubs"] = [c.to_dict() for c in counts]
    data["alert"] = alert_message(report, [cap.settings.alert_email] if cap.settings.alert_email else [])
    return Outcome(data, render)
