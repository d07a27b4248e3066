"""Capacity planning's functions. Thin: the service does the work (capacity/service.py).

| function | trigger | |
|---|---|---|
| capacity_report | timer, daily 06:30 UTC | per region: use, growth, days until full, hubs to add; alert |
"""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger(__name__)
bp = func.Blueprint()

REPORT_SCHEDULE = "0 30 6 * * *"  # after the expiry scan (06:00), so the operations mailbox gets both together


@bp.function_name("capacity_report")
@bp.timer_trigger(schedule=REPORT_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
def capacity_report(timer: func.TimerRequest) -> None:
    from capacity.service import alert, emit_report
    from capacity.wiring import capacity
    from shared.retry import RunBudget

    cap = capacity()
    # Statistics not in after 90 s (120 s less 30 for SQL and the alert) count as unanswered: estimated, noted.
    budget = RunBudget.for_trigger("capacity_report", reserve_s=30)
    report, counts = cap.planner.report(budget)
    budget.emit(done=sum(1 for c in counts if c.source == "statistics"))
    emit_report(report)
    recipients = [cap.settings.alert_email] if cap.settings.alert_email else []
    sent = alert(report, recipients, cap.alerts.queue, cap.alerts.email)
    log.info("capacity report: %s", "; ".join(f"{r.region} {r.status}" for r in report.regions) or "no hubs")
    if sent is None:
        log.info("capacity report: every region ok")
    if counts and all(c.source in ("unavailable", "not_configured") for c in counts):
        raise RuntimeError("capacity report reached no hub: " + "; ".join(report.notes))
