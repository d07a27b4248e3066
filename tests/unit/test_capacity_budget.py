"""Issue 16: the capacity report's run budget. A hub whose registry statistics do not come back within the run's
budget counts as one that did not answer (noted; full unless the webhook's estimate stands), the report still goes
out, and the run says what it left."""

from __future__ import annotations

import datetime as dt
import threading

from capacity.service import CapacityPlanner
from capacity.settings import CapacitySettings
from shared.retry import RunBudget
from tests.cli.hub_fixtures import HUBS, fleet  # noqa: F401 - fleet: fixture

NOW = dt.datetime(2026, 11, 2, 6, 30)


def test_statistics_not_in_within_the_budget_count_as_unanswered_and_are_left_to_the_next_report(fleet):  # noqa: F811
    hung_host = next(iter(HUBS))
    release = threading.Event()

    def device_count(host):
        if host == hung_host:
            release.wait(30)  # a hub that does not answer (its own call timeout is longer than the run's budget)
        return 10

    planner = CapacityPlanner(fleet, device_count, list(HUBS), CapacitySettings(), now=lambda: NOW)
    budget = RunBudget("capacity_report", 1.0, reserve_s=0.5)
    try:
        report, counts = planner.report(budget)
    finally:
        release.set()
    sources = {c.hub.host_name: c.source for c in counts}
    assert sources[hung_host] == "unavailable"
    assert all(source == "statistics" for host, source in sources.items() if host != hung_host)
    assert any(hung_host in note and "statistics unavailable" in note for note in report.notes)
    assert budget.exhausted and budget.left == {"statistics": 1}

    again = RunBudget("capacity_report", 30, reserve_s=0.5)
    _, counts = planner.report(again)  # the next report: the hub answers
    assert {c.source for c in counts} == {"statistics"} and again.left == {}
