"""`make demo`: a whole plant rollout, end to end, on one machine.

Starts a fresh local stack under .local/demo/ unless one is running (its hubs get 50x an S1 unit's throttles,
about an S3, so 3,600 sensors fit in a minute; its Functions host runs two worker processes; a fresh state
makes runs with the same --seed repeatable),
onboards the reference fleet through the real functions with its incidents, prints a summary, writes an HTML
report to .local/report/, and exits non-zero when verification fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from local.stack import REPO_ROOT, STATE_DIR, Stack, StackError, health

DEMO_THROTTLE = ["--rate-multiplier", "50"]


def print_health(body: dict) -> None:
    components = body.get("components", {})
    width = max((len(n) for n in components), default=10)
    for name, c in components.items():
        print(f"  {name:<{width}}  {c['status']:<6} {c.get('reason', '')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facilities", type=int, default=12, help="plants to roll out (1-12, default 12)")
    parser.add_argument("--per-facility", type=int, default=300, help="sensors per plant (default 300)")
    parser.add_argument("--seed", type=int, default=2026, help="fleet plan seed, for repeatable runs")
    parser.add_argument("--workers", type=int, default=32,
                        help="sensors manufactured or powered on at the same time (default 32; on two cores more "
                             "only adds contention)")
    parser.add_argument("--report-dir", type=Path, default=STATE_DIR / "report")
    args = parser.parse_args(argv)
    if not 1 <= args.facilities <= 12 or args.per_facility < 3:
        parser.error("--facilities must be 1..12 and --per-facility at least 3")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")

    stack = None
    state_dir, settings_path = STATE_DIR, REPO_ROOT / "local.settings.json"
    try:
        answer = health(timeout=2)
        if answer is None:
            state_dir = STATE_DIR / "demo"
            settings_path = state_dir / "local.settings.json"
            shutil.rmtree(state_dir, ignore_errors=True)
            print("starting a fresh local stack in .local/demo/ (Azurite, IoT Hub x3, Key Vault, DPS service API, "
                  "Functions host)...",
                  flush=True)
            stack = Stack(state_dir=state_dir, settings_path=settings_path, iothub_args=DEMO_THROTTLE,
                          extra_settings={"CRL_CACHE_TTL_SECONDS": "2", "CERT_SUPERSEDED_GRACE_HOURS": "0",
                                          "FUNCTIONS_WORKER_PROCESS_COUNT": "2",
                                          # the funnel: a sensor silent 15 s after applying its configuration
                                          # is stuck (the incident), and the margin fits the sensors' warm-up
                                          "FUNNEL_STUCK_ACKNOWLEDGED_SECONDS": "15",
                                          "FUNNEL_LIVE_MARGIN_SECONDS": "1",
                                          "PYTHON_THREADPOOL_THREAD_COUNT": "8"})
            started = time.monotonic()
            stack.start(host_to_console=False)
            answer = health()
            print(f"stack healthy after {time.monotonic() - started:.1f}s")
        else:
            minutes = args.facilities * args.per_facility / (3 * 100)  # S1: 100 identity operations/min per hub
            print("using the local stack that is already running: its hubs keep their devices and S1 throttles, so "
                  f"registering {args.facilities * args.per_facility} sensors takes about {minutes:.0f} min or more. "
                  "Stop it first for the fast, repeatable demo.", flush=True)
        status, body = answer
        print_health(body)
        if status != 200:
            print("the stack is not healthy; see .local/logs/", file=sys.stderr)
            return 1
        return run_rollout(args, state_dir, settings_path)
    except StackError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if stack is not None:
            stack.stop()


def run_rollout(args, state_dir: Path, settings_path: Path) -> int:
    import json

    from local.fleet.report import print_summary, write_report
    from local.fleet.scenario import Scenario, ScenarioOptions
    from shared.bootstrap import Services
    from shared.config import Settings

    values = json.loads(settings_path.read_text())["Values"]
    os.environ.update(values)  # this process acts as DPS, the factory and the devices, with the app's settings
    services = Services(Settings())
    options = ScenarioOptions(facilities=args.facilities, per_facility=args.per_facility, seed=args.seed,
                              workers=args.workers, spill_devices=max(1, args.per_facility // 8))
    total = args.facilities * args.per_facility
    print(f"\nrolling out {total} sensors in {args.facilities} plants (seed {args.seed})", flush=True)
    result = Scenario(services, state_dir, options).run()
    print_summary(result)
    report = write_report(result, args.report_dir)
    print(f"\nreport: {report}")
    if not result.ok:
        print("\nVERIFICATION FAILED:\n  " + "\n  ".join(result.failures), file=sys.stderr)
        return 1
    print("verification: every twin matches template (+) overrides, refused sensors got no hub, none lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
