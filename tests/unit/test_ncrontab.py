"""NCRONTAB schedules as the Functions timer trigger (NCrontab library) reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local.host.ncrontab import IntervalSchedule, next_occurrence, parse, parse_schedule

FRIDAY = datetime(2024, 5, 17, 14, 3, 7, tzinfo=UTC)  # a Friday afternoon


def occurrences(expression: str, after: datetime, count: int) -> list[datetime]:
    found, moment = [], after
    for _ in range(count):
        moment = next_occurrence(expression, moment)
        found.append(moment)
    return found


def test_daily_at_half_past_two():
    assert next_occurrence("0 30 2 * * *", FRIDAY) == datetime(2024, 5, 18, 2, 30, tzinfo=UTC)
    assert next_occurrence("0 30 2 * * *", datetime(2024, 5, 18, 1, 0, tzinfo=UTC)) == datetime(
        2024, 5, 18, 2, 30, tzinfo=UTC)


def test_next_is_strictly_after():
    at = datetime(2024, 5, 18, 2, 30, tzinfo=UTC)
    assert next_occurrence("0 30 2 * * *", at) == at + timedelta(days=1)
    assert next_occurrence("0 30 2 * * *", at - timedelta(microseconds=1)) == at


def test_every_fifteen_seconds():
    assert [t.strftime("%H:%M:%S") for t in occurrences("*/15 * * * * *", FRIDAY, 4)] == [
        "14:03:15", "14:03:30", "14:03:45", "14:04:00"]


def test_weekdays_at_nine_skip_the_weekend():
    assert next_occurrence("0 0 9 * * MON-FRI", FRIDAY) == datetime(2024, 5, 20, 9, 0, tzinfo=UTC)
    monday_morning = datetime(2024, 5, 20, 8, 59, 59, tzinfo=UTC)
    assert next_occurrence("0 0 9 * * MON-FRI", monday_morning) == datetime(2024, 5, 20, 9, tzinfo=UTC)
    for same in ("0 0 9 * * 1-5", "0 0 9 * * mon-fri", "0 0 9 * * Monday-Friday", "0 0 9 * * 1,2,3,4,5"):
        assert occurrences(same, FRIDAY, 6) == occurrences("0 0 9 * * MON-FRI", FRIDAY, 6)


def test_sunday_is_zero():
    assert next_occurrence("0 0 0 * * 0", FRIDAY) == datetime(2024, 5, 19, tzinfo=UTC)
    assert next_occurrence("0 0 0 * * SUN", FRIDAY) == datetime(2024, 5, 19, tzinfo=UTC)


def test_five_fields_mean_second_zero():
    assert occurrences("30 2 * * *", FRIDAY, 3) == occurrences("0 30 2 * * *", FRIDAY, 3)


def test_every_five_minutes():
    assert [t.minute for t in occurrences("0 */5 * * * *", FRIDAY, 3)] == [5, 10, 15]


def test_month_names_and_lists():
    start = datetime(2024, 2, 1, tzinfo=UTC)
    assert [t.date().isoformat() for t in occurrences("0 0 12 1 JAN,jul *", start, 3)] == [
        "2024-07-01", "2025-01-01", "2025-07-01"]


def test_day_of_month_and_day_of_week_must_both_match():
    # NCrontab ANDs the two fields (Vixie cron would OR them): Friday the 13th.
    assert next_occurrence("0 0 0 13 * FRI", datetime(2024, 1, 1, tzinfo=UTC)) == datetime(2024, 9, 13, tzinfo=UTC)


def test_short_months_and_leap_days():
    assert next_occurrence("0 0 0 31 * *", datetime(2024, 4, 1, tzinfo=UTC)) == datetime(2024, 5, 31, tzinfo=UTC)
    assert next_occurrence("0 0 0 29 2 *", datetime(2024, 3, 1, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)


def test_value_with_step_runs_to_the_end_of_the_field():
    assert [t.second for t in occurrences("5/20 * * * * *", datetime(2024, 1, 1, tzinfo=UTC), 4)] == [5, 25, 45, 5]


def test_range_with_step_and_reversed_range():
    assert parse("0 0 1-10/3 * * *").hours == (1, 4, 7, 10)
    assert parse("0 0 5-3 * * *").hours == (3, 4, 5)  # NCrontab swaps a reversed range


def test_time_zone_and_naive_datetimes_are_kept():
    naive = datetime(2024, 5, 17, 14, 3, 7)
    assert next_occurrence("0 30 2 * * *", naive) == datetime(2024, 5, 18, 2, 30)


def test_timespan_schedules():
    assert parse_schedule("01:30:00") == IntervalSchedule("01:30:00", timedelta(minutes=90))
    assert next_occurrence("1.00:00:00", FRIDAY) == FRIDAY + timedelta(days=1)
    assert next_occurrence("00:00:05", FRIDAY) == FRIDAY + timedelta(seconds=5)
    with pytest.raises(ValueError, match="longer than zero"):
        parse_schedule("00:00:00")


@pytest.mark.parametrize(("expression", "message"), [
    ("", "must have 6 fields"),
    ("* * * *", r"must have 6 fields .* found 4"),
    ("0 0 0 * * * *", "found 7"),
    ("60 * * * * *", "second field '60': 60 is outside 0-59"),
    ("0 60 * * * *", "minute field"),
    ("0 0 24 * * *", "hour field '24': 24 is outside 0-23"),
    ("0 0 0 0 * *", "day field '0': 0 is outside 1-31"),
    ("0 0 0 * 13 *", "month field"),
    ("0 0 0 * * 7", "day-of-week field '7': 7 is outside 0-6"),
    ("0 0 0 * * FUNDAY", "'FUNDAY' is not a known name"),
    ("0 0 0 * FOO *", "not a known name"),
    ("*/x * * * * *", "step 'x' is not a whole number"),
    ("1,,2 * * * * *", "empty value"),
    ("0 0 12 * * -1", "day-of-week field"),
    ("0 0 nine * * *", "'nine' is not a number 0-23"),
])
def test_invalid_expressions_say_what_is_wrong(expression, message):
    with pytest.raises(ValueError, match=message):
        parse_schedule(expression)


def test_an_expression_that_never_occurs_is_an_error():
    schedule = parse("0 0 0 30 2 *")
    with pytest.raises(ValueError, match="no occurrence"):
        schedule.next_after(FRIDAY)


EXPRESSIONS = ["*/7 */3 * * * *", "15,45 * * * * *", "0 * 13-14 * * *", "10-20/5 0-9 * * * SAT,SUN",
               "0 */2 * * * *", "30 59 23 * * *"]


@settings(max_examples=60, deadline=None)
@given(expression=st.sampled_from(EXPRESSIONS),
       after=st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2030, 12, 31)))
def test_matches_a_second_by_second_search(expression, after):
    schedule = parse(expression)
    found = schedule.next_after(after)
    assert found > after
    assert found.second in schedule.seconds and found.minute in schedule.minutes and found.hour in schedule.hours
    assert (found.weekday() + 1) % 7 in schedule.days_of_week
    # nothing matches between after and found (checked minute by minute, then second by second)
    probe = after.replace(microsecond=0) + timedelta(seconds=1)
    while probe < found:
        minute_matches = (probe.minute in schedule.minutes and probe.hour in schedule.hours
                          and (probe.weekday() + 1) % 7 in schedule.days_of_week)
        if minute_matches:
            assert probe.second not in schedule.seconds, f"{probe} matches {expression} before {found}"
            probe += timedelta(seconds=1)
        else:
            probe = probe.replace(second=0) + timedelta(minutes=1)
