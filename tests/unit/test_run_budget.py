"""Issue 16: a timer run or queue message has its own time (shared/retry.py RunBudget): it stops starting new work
when the time is spent, says what it left, and the retries of its calls never outlast it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.retry import FUNCTION_TIMEOUT_S, RUN_BUDGETS_S, RetryPolicy, RunBudget, TransientError

REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_budgeted_loop_stops_when_the_budget_is_spent_and_counts_the_rest():
    clock = Clock()
    budget = RunBudget("collector", 10, reserve_s=2, clock=clock)
    done = []
    for item in budget.take(list(range(10)), "renewals"):
        done.append(item)
        clock.sleep(3)  # each unit takes 3 s: after three, fewer than 2 s of the 10 are left
    assert done == [0, 1, 2]
    assert budget.exhausted and budget.left == {"renewals": 7}
    assert budget.summary()["left"] == {"renewals": 7} and budget.summary()["budgetExhausted"] is True


def test_the_next_run_with_time_enough_finishes_what_was_left():
    clock = Clock()
    pending = list(range(10))
    first = RunBudget("collector", 10, reserve_s=2, clock=clock)
    for item in first.take(list(pending), "renewals"):
        pending.remove(item)
        clock.sleep(3)
    second = RunBudget("collector", 60, reserve_s=2, clock=clock)
    for item in second.take(list(pending), "renewals"):
        pending.remove(item)
        clock.sleep(3)
    assert pending == [] and not second.exhausted and second.left == {}


def test_a_lazy_source_is_not_read_on_to_count_it():
    clock = Clock()
    budget = RunBudget("scan", 5, clock=clock)
    read = []

    def pages():
        for i in range(100):
            read.append(i)
            yield i

    taken = []
    for item in budget.take(pages(), "twins"):
        taken.append(item)
        clock.sleep(2)
    assert taken == [0, 1, 2] and read == [0, 1, 2, 3]  # the fourth was read, not started
    assert budget.left == {"twins": 1}


def test_calls_under_a_run_give_up_when_the_run_has_no_time_for_the_next_retry():
    clock = Clock()
    run = RunBudget("funnel", 25, reserve_s=10, clock=clock)
    calls = run.calls(RetryPolicy(attempts=5, base_s=4, budget_s=60, max_backoff_s=8), sleep=clock.sleep)
    assert calls.remaining_s() == pytest.approx(15)  # 25 s less the reserve, not the policy's 60

    def throttled():
        raise TransientError("429", retry_after_s=6)

    with pytest.raises(TransientError):
        calls.run(throttled, "query")
    assert clock.now - 1000.0 <= 15  # it never waited past the run's time


def test_a_spent_budget_stays_spent_and_a_budget_without_limit_never_is():
    clock = Clock()
    budget = RunBudget("scan", 1, clock=clock)
    clock.sleep(2)
    assert budget.spent()
    clock.now -= 5  # even a clock read that went back does not reopen it
    assert budget.spent()
    unlimited = RunBudget("cli", float("inf"), clock=clock)
    clock.sleep(1e6)
    assert not unlimited.spent()
    assert unlimited.calls(RetryPolicy(budget_s=20)).remaining_s() == pytest.approx(20)


def test_each_trigger_budget_fits_the_function_timeout_and_its_schedule():
    host = json.loads((REPO / "host.json").read_text())
    h, m, s = (int(x) for x in host["functionTimeout"].split(":"))
    assert FUNCTION_TIMEOUT_S == h * 3600 + m * 60 + s
    periods = {"onboarding_funnel": 30, "refresh_crls": 6 * 3600, "collect_renewal_csrs": 3600,
               "scan_expiring_certificates": 86400, "capacity_report": 86400,
               "check_config_drift": 3600}
    for trigger, budget_s in RUN_BUDGETS_S.items():
        assert budget_s <= FUNCTION_TIMEOUT_S - 60, f"{trigger}: leave a minute for the call in flight"
        if trigger in periods:
            assert budget_s < periods[trigger], f"{trigger}: a run must end before the next one is due"


def test_every_budgeted_trigger_exists_and_uses_its_budget():
    names = set(RUN_BUDGETS_S)
    sources = "".join(p.read_text() for p in REPO.glob("*/functions.py")) + (REPO / "funnel/service.py").read_text()
    declared = set(re.findall(r'function_name\("(\w+)"\)', sources))
    assert names <= declared
    used = set(re.findall(r'RunBudget\.for_trigger\("(\w+)"', sources)) | set(
        re.findall(r'RUN_BUDGETS_S\["(\w+)"\]', sources))
    assert used == names
