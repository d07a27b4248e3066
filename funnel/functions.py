"""The onboarding funnel's functions. Thin: the reconciler does the work (funnel/service.py).

| function | trigger | |
|---|---|---|
| onboarding_funnel | timer, every 30 s | sensors not yet live, on every hub: stages, stuck sensors, daily digests |
"""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger(__name__)
bp = func.Blueprint()

# Every 30 s: a live time is at most this late (funnel/stages.py), and two runs a minute take 2 of an S1 unit's 20
# queries a minute per hub while fewer than 1,000 sensors are pending on it (README "Onboarding funnel").
SCHEDULE = "*/30 * * * * *"


@bp.function_name("onboarding_funnel")
@bp.timer_trigger(schedule=SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
def onboarding_funnel(timer: func.TimerRequest) -> None:
    from funnel.wiring import funnel

    report = funnel().reconciler.run()
    log.info("funnel: pending %s, stuck %s, %d digests, %d queries", dict(report.pending), dict(report.stuck),
             len(report.digests), report.queries)
    if report.incomplete_hubs and len(report.incomplete_hubs) == len(funnel().reconciler.hosts):
        raise RuntimeError("funnel reached no hub: " + ", ".join(report.incomplete_hubs))
