"""The capacity projection (capacity/projection.py): use against limits, growth, days until full, status, hubs to
add, and the alert built from it. Pure: plain data in, plain data out."""

from __future__ import annotations

import datetime as dt

import pytest

from capacity.projection import (
    FULL,
    OK,
    WARN,
    HubUse,
    Thresholds,
    alert_message,
    days_to_full,
    email_content,
    growth_per_day,
    hubs_to_add,
    project,
    project_region,
    region_line,
)
from capacity.settings import capacity_settings
from shared.config import SettingError, Settings

TODAY = dt.date(2026, 11, 2)
T = Thresholds()  # 80%, 30 days, 90 days of headroom


def hub(host="h1", region="west", devices=0, max_devices=2000, accepting=True) -> HubUse:
    return HubUse(host, region, devices, max_devices, accepting)


def test_growth_is_the_mean_of_the_window_with_quiet_days_as_zero():
    assert growth_per_day([]) == 0
    assert growth_per_day([10, 0, 20, 30]) == 15
    # a 14-day window with one burst of 1,400: 100 a day, not 1,400
    region = project_region("west", [hub(devices=1400)], [1400] + [0] * 13, TODAY)
    assert region.growth_per_day == 100 and region.window_days == 14


def test_project_pads_missing_days_to_the_window():
    report = project([hub(devices=100)], {"west": [140]}, TODAY, window_days=14)
    assert report.regions[0].growth_per_day == 10


def test_no_growth_means_no_projected_date():
    region = project_region("west", [hub(devices=500)], [0] * 14, TODAY)
    assert region.days_to_full is None and region.full_on is None
    assert region.status == OK and region.hubs_to_add == 0


def test_days_to_full_and_the_date():
    region = project_region("west", [hub(devices=1000), hub("h2", devices=0)], [20] * 14, TODAY)
    # 4,000 places, 1,000 used, 20 a day: 150 days
    assert (region.limit, region.devices, region.free) == (4000, 1000, 3000)
    assert region.days_to_full == 150 and region.full_on == TODAY + dt.timedelta(days=150)
    assert region.status == OK


def test_warn_at_the_utilisation_share():
    region = project_region("west", [hub(devices=1600)], [0] * 14, TODAY)
    assert region.utilisation == 0.8 and region.status == WARN
    assert project_region("west", [hub(devices=1599)], [0] * 14, TODAY).status == OK


def test_warn_when_full_within_the_warning_days():
    region = project_region("west", [hub(devices=100)], [70] * 14, TODAY)  # 1,900 free at 70 a day: 27 days
    assert region.utilisation < 0.8 and region.days_to_full == pytest.approx(27.14, abs=0.01)
    assert region.status == WARN


def test_full_when_no_place_is_left():
    region = project_region("west", [hub(devices=2000)], [5] * 14, TODAY)
    assert region.status == FULL and region.days_to_full == 0 and region.full_on == TODAY
    over = project_region("west", [hub(devices=2100)], [0] * 14, TODAY)
    assert over.status == FULL and over.free == 0


def test_a_region_with_no_accepting_hub_is_full_and_gets_a_hub():
    region = project_region("west", [hub(devices=1500, accepting=False)], [0] * 14, TODAY)
    assert (region.limit, region.devices, region.devices_not_accepting) == (0, 0, 1500)
    assert region.status == FULL and region.utilisation is None and region.days_to_full == 0
    assert region.hubs_to_add == 1 and region.hub_size == 2000


def test_a_hub_that_stopped_accepting_does_not_count_against_the_limit():
    region = project_region("west", [hub(devices=1900, accepting=False), hub("h2", devices=100)], [0] * 14, TODAY)
    assert (region.devices, region.limit, region.devices_not_accepting) == (100, 2000, 1900)
    assert region.status == OK and region.accepting_hubs == 1 and region.hubs == 2


def test_zero_capacity_hubs_add_no_place_and_size_no_recommendation():
    region = project_region("west", [hub(max_devices=0)], [10] * 14, TODAY, fleet_hub_size=5000)
    assert region.limit == 0 and region.status == FULL
    # the region's own hubs have no size: the fleet's largest is used
    assert region.hub_size == 5000 and region.hubs_to_add == 1
    lonely = project_region("west", [hub(max_devices=0)], [10] * 14, TODAY)
    assert lonely.hubs_to_add is None and "add ? hub(s)" in region_line(lonely.to_dict())


def test_declining_allocations_still_count_what_is_taken():
    # fewer allocations each day: the mean of the window, not the last day, is the rate
    daily = list(range(140, 0, -10))
    region = project_region("west", [hub(devices=1000)], daily, TODAY)
    assert region.growth_per_day == pytest.approx(sum(daily) / 14)
    # net decline (counts that go negative, e.g. from a source that subtracts deletions): no projected date
    shrinking = project_region("west", [hub(devices=1000)], [-5] * 14, TODAY)
    assert shrinking.days_to_full is None and shrinking.status == OK and shrinking.hubs_to_add == 0


def test_hubs_to_add_keep_the_headroom_below_the_warning_share():
    # 1,500 used + 90 days x 20 = 3,300 devices; below 80% needs a limit above 4,125: 2,000 + 2 x 2,000
    assert hubs_to_add(1500, 2000, 20, 2000, T) == 2
    # exactly at the share is not below it
    assert hubs_to_add(1600, 2000, 0, 2000, T) == 1
    assert hubs_to_add(1599, 2000, 0, 2000, T) == 0
    assert hubs_to_add(0, 0, 0, 2000, T) == 1  # no accepting hub
    assert hubs_to_add(100, 2000, 0, None, T) == 0  # nothing needed: no size needed either
    assert hubs_to_add(1900, 2000, 0, None, T) is None
    assert hubs_to_add(1500, 2000, 20, 2000, Thresholds(warn_utilisation=1.0, headroom_days=20)) == 0


def test_days_to_full_edges():
    assert days_to_full(0, 0, 10) == 0
    assert days_to_full(10, 100, 0) is None
    assert days_to_full(10, 100, 9) == 10


def test_report_regions_and_total():
    hubs = [hub("w1", devices=1000), hub("w2", devices=900), hub("c1", "central", devices=100),
            hub("e1", "east", devices=0, accepting=False)]
    report = project(hubs, {"west": [50] * 14, "central": [10] * 14, "north": [3] * 14}, TODAY)
    by = {r.region: r for r in report.regions}
    assert list(by) == ["central", "east", "north", "west"]  # a region with allocations but no hub is shown too
    assert by["north"].status == FULL and by["north"].hubs_to_add == 1
    assert by["east"].status == FULL
    assert by["west"].status == OK and by["west"].days_to_full == pytest.approx(42.0)
    total = report.total
    assert total.region == "total" and total.devices == 2000 and total.limit == 6000
    assert total.growth_per_day == 63 and total.status == FULL
    assert total.hubs_to_add == sum(r.hubs_to_add for r in report.regions)
    assert report.to_dict()["total"]["region"] == "total"


def test_empty_fleet():
    report = project([], {}, TODAY)
    assert report.regions == [] and report.total.status == OK and report.total.days_to_full is None
    assert alert_message(report, ["ops@example.com"]) is None


def test_alert_lists_only_the_regions_past_a_threshold():
    hubs = [hub("w1", devices=1700), hub("c1", "central", devices=10), hub("e1", "east", devices=2000)]
    report = project(hubs, {"west": [10] * 14}, TODAY)
    message = alert_message(report, ["ops@example.com"])
    assert message["type"] == "hubCapacityAlert" and message["id"] == "2026-11-02:capacity"
    assert [r["region"] for r in message["regions"]] == ["east", "west"]
    assert message["level"] == FULL and message["to"] == ["ops@example.com"]
    assert message["hubsToAdd"] == sum(r["hubsToAdd"] for r in message["regions"]) > 0
    mail = email_content(message)
    assert mail["subject"].startswith("[FULL] IoT hub capacity: east full, west warn; add ")
    assert "west: warn, 1700/2000 (85%), 10/day, full in 30 days (2026-12-02); add 1 hub(s) of 2000 devices" \
        in mail["plainText"]
    assert "east: full, 2000/2000 (100%), 0/day, full now; add 1 hub(s)" in mail["plainText"]


def test_settings_defaults_and_validation():
    cfg = capacity_settings(Settings({}))
    assert cfg.thresholds == Thresholds(0.8, 30, 90) and cfg.growth_days == 14 and cfg.alert_email is None
    cfg = capacity_settings(Settings({"CERT_ESCALATION_EMAIL": "soc@example.com", "CAPACITY_WARN_DAYS": "45"}))
    assert cfg.alert_email == "soc@example.com" and cfg.thresholds.warn_days == 45
    cfg = capacity_settings(Settings({"CERT_ESCALATION_EMAIL": "soc@example.com",
                                      "CAPACITY_ALERT_EMAIL": "ops@example.com"}))
    assert cfg.alert_email == "ops@example.com"
    for bad in ({"CAPACITY_WARN_UTILISATION": "0"}, {"CAPACITY_WARN_UTILISATION": "1.5"},
                {"CAPACITY_GROWTH_DAYS": "2.5"}, {"CAPACITY_GROWTH_DAYS": "0"}, {"CAPACITY_HEADROOM_DAYS": "-1"}):
        with pytest.raises(SettingError, match=next(iter(bad))):
            capacity_settings(Settings(bad))
