"""`make demo`: a whole plant rollout, end to end, on one machine.

Starts a fresh local stack under .local/demo/ unless one is running, sized to the fleet: the hubs per region and
each hub's limit the capacity planner would recommend for it (printed first; its hubs get 50x an S1 unit's throttles,
about an S3, so 3,600 sensors fit in a minute; its Functions host runs two worker processes; a fresh state
makes runs with the same --seed repeatable),
onboards the reference fleet through the real functions with its incidents, prints a summary (with the Azure
operations the product made per sensor, shared/usage.py), writes an HTML report to .local/report/, and exits
non-zero when verification fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from local.fleet.plan import HubPlan, plan_fleet, plan_hubs
from local.seed import data
from local.stack import REPO_ROOT, STATE_DIR, Stack, StackError, health
from shared import usage

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
    plan = hub_plan(args)
    try:
        answer = health(timeout=2)
        if answer is None:
            state_dir = STATE_DIR / "demo"
            settings_path = state_dir / "local.settings.json"
            shutil.rmtree(state_dir, ignore_errors=True)
            print("\n".join(plan.lines()))
            hubs = data.hubs(plan.hubs_per_region, plan.max_devices)
            print(f"starting a fresh local stack in .local/demo/ (Azurite, IoT Hub x{len(hubs)}, Key Vault, DPS "
                  "service API, Functions host)...", flush=True)
            stack = Stack(state_dir=state_dir, settings_path=settings_path, iothub_args=DEMO_THROTTLE, hubs=hubs,
                          extra_settings={"CRL_CACHE_TTL_SECONDS": "2", "CERT_SUPERSEDED_GRACE_HOURS": "0",
                                          "FUNCTIONS_WORKER_PROCESS_COUNT": "2",
                                          # the funnel: a sensor silent 15 s after applying its configuration
                                          # is stuck (the incident), and the margin fits the sensors' warm-up
                                          "FUNNEL_STUCK_ACKNOWLEDGED_SECONDS": "15",
                                          "FUNNEL_LIVE_MARGIN_SECONDS": "1",
                                          # the mid-run template change: its rollout's final sweep waits for
                                          # every worker's template cache, so keep that short
                                          "TWIN_TEMPLATE_CACHE_SECONDS": "5",
                                          "PYTHON_THREADPOOL_THREAD_COUNT": "8"})
            started = time.monotonic()
            # every process of the stack writes its Azure operation counts here (shared/usage.py)
            os.environ[usage.DIR_ENV] = str(state_dir / "usage")
            try:
                stack.start(host_to_console=False)
            finally:
                os.environ.pop(usage.DIR_ENV, None)
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


def hub_plan(args) -> HubPlan:
    """The stack this rollout needs, as the capacity planner sizes it: the fleet's sensors per region, in hubs of the
    seed's size (bigger ones past data.MAX_HUBS_PER_REGION hubs)."""
    facilities = [f"FAC{n:02d}" for n in range(1, args.facilities + 1)]
    region = {code: name for name, codes in data.REGIONS.items() for code in codes}
    devices = dict.fromkeys(data.REGIONS, 0)
    for device in plan_fleet(facilities, args.per_facility, args.seed):
        devices[region[device.facility]] += 1
    return plan_hubs(devices, data.HUB_MAX_DEVICES, data.MAX_HUBS_PER_REGION)


def run_rollout(args, state_dir: Path, settings_path: Path) -> int:
    import json

    from local.fleet.report import print_summary, write_report
    from local.fleet.scenario import Scenario, ScenarioOptions
    from local.fleet.usage import UsageMeter, per_sensor
    from shared.bootstrap import Services
    from shared.config import Settings

    values = json.loads(settings_path.read_text())["Values"]
    os.environ.update(values)  # this process acts as DPS, the factory and the devices, with the app's settings
    services = Services(Settings())
    meter = UsageMeter(state_dir / "usage") if (state_dir / "usage").is_dir() else None
    options = ScenarioOptions(facilities=args.facilities, per_facility=args.per_facility, seed=args.seed,
                              workers=args.workers, spill_devices=max(1, args.per_facility // 8),
                              on_phase=meter.mark if meter else None,
                              # the funnel's timer records a sensor live within a run or a few (a run has 25 s for
                              # about a thousand): a bigger rollout leaves it more to catch up once all are on
                              funnel_timeout_s=max(240.0, args.facilities * args.per_facility / 20))
    total = args.facilities * args.per_facility
    print(f"\nrolling out {total} sensors in {args.facilities} plants (seed {args.seed})", flush=True)
    if meter:
        meter.mark("manufacture")
    result = Scenario(services, state_dir, options).run()
    if meter:
        result.usage = per_sensor(meter.finish(), manufactured=total,
                                  configured=sum(1 for o in result.outcomes if o.status == "configured"))
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
