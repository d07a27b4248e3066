"""`onboarding funnel`: the onboarding funnel now (funnel/): sensors per stage reached in the last hours (SQL
onboarding_stages), power-on to live p50 / p95, and the sensors still pending on the hubs with the stage each is in
and whether it is stuck, judged by the reconciler's own logic (funnel/stages.py). Read-only: no tag, row or digest is
written (the timer does that every 30 s)."""

from __future__ import annotations

import argparse
import datetime as dt
from collections import Counter
from typing import Any, TextIO

from cli.output import Outcome


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("funnel", parents=[common], help="onboarding funnel: stages, power-on to live, "
                                 "stuck sensors", description=__doc__)
    parser.add_argument("--hours", type=float, default=24, help="window of the stage counts (default 24)")
    parser.add_argument("--stuck", type=int, default=20, help="stuck sensors to list (default 20)")
    parser.set_defaults(run=run)


def _quantile(values: list[float], q: float) -> float | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def _moment(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


def render(data: dict[str, Any], out: TextIO) -> None:
    print(f"stages reached in the last {data['hours']:g} h: "
          + " -> ".join(f"{k} {v}" for k, v in data["reached"].items()), file=out)
    p = data["powerOnToLive"]
    if p["sensors"]:
        print(f"power-on to live (allocation to first telemetry): p50 {p['p50']} s, p95 {p['p95']} s over "
              f"{p['sensors']} sensors", file=out)
    else:
        print("power-on to live (allocation to first telemetry): no sensor went live in that time", file=out)
    print("pending on the hubs now: " + (", ".join(f"{k} {v}" for k, v in data["pending"].items()) or "none")
          + "; stuck: " + (", ".join(f"{k} {v}" for k, v in data["stuckByStage"].items()) or "none"), file=out)
    for s in data["stuck"]:
        print(f"  {s['deviceId']:<40} {s['stage']:<13} since {s['since']}  {s['facility'] or '-':<8} {s['hub']}"
              + (f"  twin setup failed: {s['reason']}" if s.get("reason") else ""), file=out)
    for hub in data["unreachable"]:
        print(f"note: hub {hub} not read", file=out)


def run(args: argparse.Namespace) -> Outcome:
    from funnel.stages import PENDING_QUERY, FunnelView, advance
    from funnel.wiring import funnel
    from shared.times import sql_utc, utc_now

    f = funnel()
    now = utc_now()
    rows = f.svc.database.fetch_all("SELECT device_id, stage, at FROM onboarding_stages WHERE at >= ?",
                                    [sql_utc(now - dt.timedelta(hours=args.hours))])
    reached = Counter(r["stage"] for r in rows)
    times = {(r["device_id"], r["stage"]): _moment(r["at"]) for r in rows}
    spans = sorted((times[(d, "live")] - times[(d, "allocated")]).total_seconds()
                   for d, stage in times if stage == "live" and (d, "allocated") in times)
    pending, stuck_by_stage, stuck, unreachable = Counter(), Counter(), [], []
    hub = f.svc.iothub()
    for host in f.svc.settings.iot_hub_host_names:
        try:
            for twin in hub.query(host, PENDING_QUERY, max_pages=f.settings.max_pages):
                view = FunnelView.of(twin)
                step = advance(view, now, f.settings.limits)
                pending[step.stage] += 1
                if step.stuck:
                    stuck_by_stage[step.stuck["stage"]] += 1
                    stuck.append({"deviceId": view.device_id, "hub": host, "facility": view.facility,
                                  **step.stuck, "reason": step.reason})
        except Exception as exc:  # noqa: BLE001 - one hub down: the others are still worth showing
            unreachable.append(f"{host} ({type(exc).__name__})")
    stuck.sort(key=lambda s: s["since"])
    stages = ("allocated", "created", "configured", "acknowledged", "live")
    data = {"hours": args.hours, "reached": {s: reached.get(s, 0) for s in stages},
            "powerOnToLive": {"p50": _quantile(spans, 0.5), "p95": _quantile(spans, 0.95), "sensors": len(spans)},
            "pending": dict(pending), "stuckByStage": dict(stuck_by_stage), "stuck": stuck[:args.stuck],
            "stuckTotal": len(stuck), "unreachable": unreachable}
    return Outcome(data, render)
