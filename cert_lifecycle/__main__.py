"""Certificate lifecycle from the command line, against the configured services (the local stack by default).

    python -m cert_lifecycle alerts [--drain]   the expiry digests on the certificate-alerts queue
    python -m cert_lifecycle scan [--at TIME]   run the expiry scan now (or as if at TIME, e.g. 2027-06-01)
    python -m cert_lifecycle collect            run the renewal collector now
    python -m cert_lifecycle refresh-crls       bring every CA's CRL in Key Vault up to date

App settings come from the environment, then from local.settings.json for what is not set (--settings).
`scan --at` is for rehearsals ("what happens in March?"): it queues and tags like a real scan.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def load_settings_file(path: Path) -> None:
    if path.exists():
        for key, value in json.loads(path.read_text()).get("Values", {}).items():
            os.environ.setdefault(key, str(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cert_lifecycle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"))
    commands = parser.add_subparsers(dest="command", required=True)
    alerts = commands.add_parser("alerts", help="list the expiry digests waiting on the alerts queue")
    alerts.add_argument("--drain", action="store_true", help="receive and delete them (all), instead of peeking 32")
    alerts.add_argument("--json", action="store_true", help="print the messages as JSON")
    scan = commands.add_parser("scan", help="run the expiry scan now")
    scan.add_argument("--at", help="ISO-8601 time to scan as of (default: now)")
    commands.add_parser("collect", help="run the renewal collector now")
    commands.add_parser("refresh-crls", help="re-issue CRLs that are due")
    args = parser.parse_args(argv)
    load_settings_file(args.settings)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")

    from cert_lifecycle.alerts import format_alerts, list_alerts
    from cert_lifecycle.expiry import parse_time
    from cert_lifecycle.wiring import lifecycle

    lc = lifecycle()
    if args.command == "alerts":
        found = list_alerts(lc.queues.client(lc.settings.alerts_queue), drain=args.drain)
        print(json.dumps(found, indent=2) if args.json else format_alerts(found))
    elif args.command == "scan":
        at = parse_time(args.at) if args.at else None
        if args.at and at is None:
            parser.error(f"--at {args.at!r} is not an ISO-8601 time")
        print(json.dumps(lc.scanner.run(at).to_dict(), indent=2))
    elif args.command == "collect":
        print(json.dumps(lc.renewals.collect().to_dict(), indent=2))
    else:
        for authority in lc.cas.all():
            crl = lc.publisher.publish(authority, actor="cli")
            print(f"{authority.name}: CRL {crl.number}, {crl.entries} entries, next update "
                  f"{crl.next_update.isoformat() if crl.next_update else '?'}{' (new)' if crl.changed else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
