"""`python -m local.fleet run --facility FAC03 --type temp --count 20`: simulated sensors brought up against the
running stack (manufacture, DPS, configuration) that stay online, applying desired changes and reporting, until
Ctrl-C (local/fleet/live.py)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from local.stack import REPO_ROOT, STATE_DIR, health
from shared.identity import SENSOR_TYPES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.fleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="bring sensors up and keep them online until Ctrl-C")
    run.add_argument("--facility", required=True, help="facility code, e.g. FAC03")
    run.add_argument("--type", dest="type_code", required=True, choices=sorted(SENSOR_TYPES),
                     help="sensor type code")
    run.add_argument("--count", type=int, default=20)
    run.add_argument("--seed", type=int, help="serial numbers from this seed (default: random)")
    run.add_argument("--telemetry-seconds", type=float, default=30.0)
    run.add_argument("--settings", type=Path, default=REPO_ROOT / "local.settings.json")
    run.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 1000:
        parser.error("--count must be from 1 to 1000")
    answer = health(timeout=5)
    if not answer or answer[0] != 200 or not args.settings.exists():
        print("python -m local.fleet: error dependency_unavailable: no healthy local stack (start it with "
              "`make run`)", file=sys.stderr)
        return 1
    from local.fleet.live import LiveFleet, services_from_settings

    services = services_from_settings(args.settings)
    fleet = LiveFleet(services, args.state_dir, args.facility.upper(), args.type_code, args.count, args.seed,
                      telemetry_s=args.telemetry_seconds)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        fleet.start()
        summary = fleet.summary()
        print(f"{summary['configured']} of {summary['sensors']} sensors configured and online "
              f"({args.facility.upper()}, {args.type_code}); refused: {summary['refused'] or 'none'}."
              " Ctrl-C stops them.",
              flush=True)
        while not stopped.wait(10):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
        print(json.dumps(fleet.summary(), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
