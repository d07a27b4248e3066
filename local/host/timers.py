"""Timer triggers: invoke each timer function at every occurrence of its schedule.

As the timer extension does: `%Setting%` in the schedule resolves from app settings; runOnStartup invokes
once when the host starts; an invocation is awaited before the next occurrence is computed, so runs never
overlap and occurrences missed while a run was busy are skipped. Schedules are evaluated in UTC, or in the
IANA zone named by WEBSITE_TIME_ZONE / TZ when set (as on Linux plans). There is no schedule monitor here
(no storage-backed record of past runs), so `past_due` is always False.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from azure.functions.timer import TimerRequest

from local.host.invocation import Invoker
from local.host.loader import FunctionSpec
from local.host.ncrontab import Schedule, parse_schedule
from local.host.settings import resolve_setting_references

log = logging.getLogger("local.host")


def schedule_for(spec: FunctionSpec, environ: Mapping[str, str] = os.environ) -> Schedule:
    expression = resolve_setting_references(str(spec.trigger.get("schedule", "")), environ)
    try:
        return parse_schedule(expression)
    except ValueError as exc:
        raise ValueError(f"Function {spec.name}: invalid timer schedule: {exc}") from None


def schedule_zone(environ: Mapping[str, str] = os.environ) -> tzinfo:
    name = environ.get("WEBSITE_TIME_ZONE") or environ.get("TZ")
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("Time zone '%s' is not an IANA zone name; timer schedules use UTC", name)
        return UTC


def timer_request(past_due: bool = False, last: datetime | None = None, next_: datetime | None = None) -> TimerRequest:
    """The TimerRequest the worker builds from the host's timer info."""
    status = {"Last": _iso(last), "Next": _iso(next_), "LastUpdated": _iso(last)}
    return TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})


async def run_timer(spec: FunctionSpec, schedule: Schedule, invoker: Invoker, zone: tzinfo = UTC) -> None:
    """Run forever (until cancelled): sleep to each occurrence, invoke, repeat."""
    last: datetime | None = None
    if spec.trigger.get("runOnStartup"):
        now = datetime.now(zone)
        last = now
        await invoker.invoke(spec, timer_request(last=None, next_=schedule.next_after(now)))
    while True:
        occurrence = schedule.next_after(datetime.now(zone))
        while (delay := (occurrence - datetime.now(zone)).total_seconds()) > 0:
            await asyncio.sleep(delay)
        following = schedule.next_after(occurrence)
        await invoker.invoke(spec, timer_request(last=last, next_=following))
        last = occurrence


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "0001-01-01T00:00:00"
