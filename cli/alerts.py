"""`onboarding alerts`: the certificate expiry digests waiting on the alerts queue (peeked, or --drain)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from cli.output import Outcome


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("alerts", parents=[common], help="certificate expiry digests on the alerts queue",
                                 description=__doc__)
    parser.add_argument("--drain", action="store_true",
                        help="receive and delete them (all), instead of peeking at most 32")
    parser.set_defaults(run=run)


def render(alerts: list[dict[str, Any]], out: TextIO) -> None:
    from cert_lifecycle.alerts import format_alerts

    print(format_alerts(alerts), file=out)


def run(args: argparse.Namespace) -> Outcome:
    from cert_lifecycle.alerts import list_alerts
    from cert_lifecycle.wiring import lifecycle
    from shared.bootstrap import services

    # The shared queue client (base64 messages, shared/storage.py's timeouts and retries) of the alerts queue.
    queue = services().queue(lifecycle().settings.alerts_queue)
    return Outcome(list_alerts(queue, drain=args.drain), render)
