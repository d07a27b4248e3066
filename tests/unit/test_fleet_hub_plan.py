"""The demo sizes its stack as the capacity planner would: enough hubs that every region stays below the warning
share of its limit once the rollout's sensors are placed."""

from __future__ import annotations

from types import SimpleNamespace

from capacity.projection import Thresholds
from local.demo import hub_plan
from local.fleet.plan import plan_hubs


def test_the_reference_rollout_fits_one_hub_per_region():
    plan = hub_plan(SimpleNamespace(facilities=12, per_facility=300, seed=2026))
    assert plan.hubs_per_region == 1 and plan.max_devices == 2000
    assert {r.region: r.devices for r in plan.regions} == {"central": 1200, "east": 1200, "west": 1200}


def test_ten_times_the_fleet_gets_hubs_of_the_same_size_below_the_warning_share():
    plan = hub_plan(SimpleNamespace(facilities=12, per_facility=3000, seed=2026))
    assert plan.hubs_per_region == 8 and plan.max_devices == 2000
    assert all(r.limit == 16000 and r.utilisation < 0.8 for r in plan.regions)
    text = "\n".join(plan.lines())
    assert "8 hub(s) per region" in text and "12000" in text and "4000" in text  # sensors, headroom


def test_a_fleet_past_the_stacks_hubs_gets_bigger_hubs():
    plan = plan_hubs({"west": 100_000, "east": 10}, hub_size=2000, max_hubs_per_region=20)
    assert plan.hubs_per_region <= 20 and plan.max_devices > 2000 and plan.max_devices % 500 == 0
    assert all(r.utilisation < 0.8 for r in plan.regions)


def test_the_headroom_follows_the_planners_warning_share():
    tight = plan_hubs({"west": 1500}, 2000, 20, Thresholds(warn_utilisation=0.5))
    assert tight.hubs_per_region == 2 and tight.regions[0].utilisation < 0.5
