"""NCRONTAB schedules as the Functions timer trigger reads them (pure; no I/O, no clock).

Azure's timer trigger parses `schedule` with the NCrontab library: six fields
`{second} {minute} {hour} {day} {month} {day-of-week}` (five-field expressions get second 0), each field a
`*`, a value, a range `a-b`, a step `*/n`, `a/n` (from a to the field's maximum) or `a-b/n`, or a comma list
of those. Months and days of week also take names, matched case-insensitively as prefixes of the English
names (MON, Mon, Monday; JAN, January). Day of week runs 0-6 with Sunday 0. Day of month and day of week
must *both* match (NCrontab does not use Vixie cron's OR rule). A reversed range is swapped, a step below 1
counts as 1 - NCrontab's quirks, kept so that what runs here also runs in Azure.

When the string is not a cron expression, the extension tries a TimeSpan (`hh:mm:ss`, `d.hh:mm:ss`,
`hh:mm`): a constant interval, allowed on dedicated (App Service) plans only.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December")
_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


@dataclass(frozen=True)
class _FieldKind:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


_SECOND = _FieldKind("second", 0, 59)
_MINUTE = _FieldKind("minute", 0, 59)
_HOUR = _FieldKind("hour", 0, 23)
_DAY = _FieldKind("day", 1, 31)
_MONTH = _FieldKind("month", 1, 12, _MONTH_NAMES)
_DAY_OF_WEEK = _FieldKind("day-of-week", 0, 6, _DAY_NAMES)
_SIX = (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _DAY_OF_WEEK)

# 28 years is a full Gregorian weekday/leap cycle: an expression with no occurrence in it never occurs.
_SEARCH_HORIZON = timedelta(days=366 * 28)
_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2})(?::(?P<s>\d{1,2})(?:\.(?P<f>\d{1,7}))?)?$")


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB expression: the allowed values of each field, sorted."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: frozenset[int]

    def next_after(self, after: datetime) -> datetime:
        """The first occurrence strictly after `after`, in after's own time zone (naive stays naive)."""
        t = after.replace(microsecond=0) + timedelta(seconds=1)
        limit = after + _SEARCH_HORIZON
        while t <= limit:
            if t.month not in self.months:
                t = _first_of_next_month(t)
                continue
            if t.day not in self.days or (t.weekday() + 1) % 7 not in self.days_of_week:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            hour = _next_value(self.hours, t.hour)
            if hour is None:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if hour != t.hour:
                t = t.replace(hour=hour, minute=0, second=0)
            minute = _next_value(self.minutes, t.minute)
            if minute is None:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if minute != t.minute:
                t = t.replace(minute=minute, second=0)
            second = _next_value(self.seconds, t.second)
            if second is None:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            return t.replace(second=second)
        raise ValueError(f"NCRONTAB expression '{self.expression}' has no occurrence (e.g. 30 February)")


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule: every `interval`, counted from when the host started the timer."""

    expression: str
    interval: timedelta

    def next_after(self, after: datetime) -> datetime:
        return after + self.interval


Schedule = CronSchedule | IntervalSchedule


def parse(expression: str) -> CronSchedule:
    """Parse a five- or six-field NCRONTAB expression; ValueError names the field at fault."""
    if not isinstance(expression, str):
        raise ValueError(f"NCRONTAB expression must be a string, got {type(expression).__name__}")
    tokens = expression.split()
    if len(tokens) == 5:
        tokens = ["0", *tokens]
    elif len(tokens) != 6:
        raise ValueError(
            f"'{expression}' is not a valid NCRONTAB expression: it must have 6 fields "
            "{second} {minute} {hour} {day} {month} {day-of-week} (or 5 without seconds), "
            f"found {len(tokens)}")
    values = [_parse_field(kind, token, expression) for kind, token in zip(_SIX, tokens, strict=True)]
    return CronSchedule(expression, *(tuple(v) for v in values[:5]), days_of_week=frozenset(values[5]))


def parse_schedule(expression: str) -> Schedule:
    """Parse a timer trigger `schedule` the way the extension does: NCRONTAB first, then TimeSpan."""
    try:
        return parse(expression)
    except ValueError as cron_error:
        interval = parse_timespan(expression) if isinstance(expression, str) else None
        if interval is None:
            raise
        if interval <= timedelta(0):
            raise ValueError(f"TimeSpan schedule '{expression}' must be longer than zero") from cron_error
        return IntervalSchedule(expression, interval)


def next_occurrence(expression: str, after: datetime) -> datetime:
    """Next time after `after` at which a timer with this schedule fires."""
    return parse_schedule(expression).next_after(after)


def parse_timespan(text: str) -> timedelta | None:
    """A .NET TimeSpan in `[d.]hh:mm[:ss[.fffffff]]` form, or None when text is not one."""
    match = _TIMESPAN.match(text.strip())
    if not match:
        return None
    hours, minutes = int(match["h"]), int(match["m"])
    seconds = int(match["s"] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        return None
    fraction = float(f"0.{match['f']}") if match["f"] else 0.0
    return timedelta(days=int(match["days"] or 0), hours=hours, minutes=minutes, seconds=seconds + fraction)


def _parse_field(kind: _FieldKind, token: str, expression: str) -> list[int]:
    allowed: set[int] = set()
    for part in token.split(","):
        try:
            allowed.update(_parse_part(kind, part))
        except ValueError as exc:
            raise ValueError(
                f"'{expression}' is not a valid NCRONTAB expression: {kind.name} field '{token}': {exc}") from None
    return sorted(allowed)


def _parse_part(kind: _FieldKind, part: str) -> range:
    if not part:
        raise ValueError("empty value")
    step, stepped = 1, "/" in part
    if stepped:
        part, _, step_text = part.partition("/")
        if not step_text.isdigit():
            raise ValueError(f"step '{step_text}' is not a whole number")
        step = max(int(step_text), 1)
        if not part:
            raise ValueError("a step needs a start ('*/n' or 'a/n')")
    if part == "*":
        return range(kind.low, kind.high + 1, step)
    if "-" in part[1:]:
        first_text, _, last_text = part.partition("-")
        first, last = _parse_value(kind, first_text), _parse_value(kind, last_text)
        first, last = min(first, last), max(first, last)
        return range(first, last + 1, step)
    value = _parse_value(kind, part)
    return range(value, kind.high + 1, step) if stepped else range(value, value + 1)


def _parse_value(kind: _FieldKind, text: str) -> int:
    if text.isdigit():
        value = int(text)
        if not kind.low <= value <= kind.high:
            raise ValueError(f"{value} is outside {kind.low}-{kind.high}")
        return value
    if kind.names and text.isalpha():
        for index, name in enumerate(kind.names):
            if name.lower().startswith(text.lower()):
                return kind.low + index
        raise ValueError(f"'{text}' is not a known name; use one of {', '.join(n[:3].upper() for n in kind.names)}")
    expected = f"a number {kind.low}-{kind.high}" + (" or a name" if kind.names else "")
    raise ValueError(f"'{text}' is not {expected}")


def _next_value(values: tuple[int, ...], current: int) -> int | None:
    index = bisect.bisect_left(values, current)
    return values[index] if index < len(values) else None


def _first_of_next_month(t: datetime) -> datetime:
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
