"""Time as the product writes and reads it, in one place. Pure.

- Twins, tags, messages and responses carry UTC as `YYYY-MM-DDTHH:MM:SSZ` (iso_utc). IoT Hub's query language
  compares such strings as strings, so one fixed width keeps `notAfter < '...'` queries right
  (docs/contracts.md 3).
- SQL stores naive UTC datetimes without microseconds, passed as parameters (sql_utc): DATETIME2 on Azure SQL
  and text on SQLite read back the same way.
- Reading accepts what others write: ISO-8601 with Z, an offset, or none (taken as UTC), or a datetime.
"""

from __future__ import annotations

import datetime as dt

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso_utc(moment: dt.datetime) -> str:
    """`2027-02-01T00:00:00Z` (a naive moment is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime(ISO_FORMAT)


def parse_utc(value: object) -> dt.datetime | None:
    """An aware UTC-based datetime from an ISO-8601 string or a datetime (naive means UTC); None when absent or
    unreadable."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and 10 <= len(value) <= 40:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def sql_utc(moment: dt.datetime, whole_seconds: bool = True) -> dt.datetime:
    """The naive UTC value a SQL parameter carries (whole seconds for certificate times; audit rows keep
    microseconds so that events of one second stay in order)."""
    naive = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return naive.replace(microsecond=0) if whole_seconds else naive
