"""`onboarding overrides diff --facility F --type T --overrides JSON|@FILE`: what replacing the facility's override
row for sensor type T (a template name, or * for every type) would change, touching nothing: sensors per facility
and type that would change, the fields, sensors whose document would no longer fit the twin, validation errors.
Once the row is changed in SQL (facility_overrides, with a new updated_at), the periodic check starts its rollout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.output import Outcome
from cli.templates import changes, diff_outcome
from shared.errors import OnboardingError


def register(commands, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("overrides", parents=[common], help="facility overrides: diff",
                                description=__doc__)
    sub = group.add_subparsers(dest="overrides_command", required=True, metavar="SUBCOMMAND")
    diff = sub.add_parser("diff", parents=[common], help="what a new override row would change (no side effects)")
    diff.add_argument("--facility", required=True, metavar="F", help="facility code, e.g. FAC03")
    diff.add_argument("--type", dest="sensor_type", required=True, metavar="T",
                      help="template name (temperature, pressure, ...) or * for every type")
    diff.add_argument("--overrides", required=True, metavar="JSON|@FILE",
                      help="the row's new JSON object, or @file to read it from a file")
    diff.set_defaults(run=run_diff)


def overrides_text(value: str) -> str:
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OnboardingError("invalid_request", f"--overrides {value}: {getattr(exc, 'strerror', None) or exc}") \
            from None


def run_diff(args: argparse.Namespace) -> Outcome:
    text = overrides_text(args.overrides)
    return diff_outcome(changes().preview_overrides(args.facility.upper(), args.sensor_type, text))
