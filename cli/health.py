"""`onboarding health`: the checks of GET /api/health (health/checks.py) run from here, against the same
settings, so a dependency can be checked without the Functions host. Exit 1 when one fails."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from cli.output import Outcome
from shared.errors import OnboardingError


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("health", parents=[common], help="check every dependency, as GET /api/health",
                                 description=__doc__)
    parser.set_defaults(run=run)


def render(body: dict[str, Any], out: TextIO) -> None:
    print(f"status: {body['status']}", file=out)
    for name, component in body["components"].items():
        print(f"  {name:<40} {component['status']:<6} {component['durationMs']:>8.1f} ms"
              f"  {component.get('reason', '')}".rstrip(), file=out)


def run(args: argparse.Namespace) -> Outcome:
    from health.checks import check_all
    from shared.bootstrap import services

    status, body = check_all(services())
    failing = sorted(name for name, c in body["components"].items() if c["status"] != "ok")
    failure = OnboardingError("dependency_unavailable", f"failing: {', '.join(failing)}") if status != 200 else None
    return Outcome(body, render, failure)
