"""The digest ledger (SQL onboarding_digests, migration 0007): which (day, facility, stage) digests went out, so that
a facility manager gets at most one per stage per day however often the reconciler runs. Parameterised SQL only."""

from __future__ import annotations

import datetime as dt

from shared.sql import Database
from shared.times import sql_utc


class DigestLedger:
    def __init__(self, database: Database):
        self._db = database

    def claim(self, date: str, facility: str, stage: str, devices: int, now: dt.datetime) -> bool:
        """Take the day's digest for (facility, stage); False when it was already sent (or claimed by another run)."""
        try:
            return self._db.execute(
                "INSERT INTO onboarding_digests (digest_date, facility, stage, sent_at, devices) "
                "SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM onboarding_digests "
                "WHERE digest_date = ? AND facility = ? AND stage = ?)",
                [date, facility[:16], stage, sql_utc(now), devices, date, facility[:16], stage]) == 1
        except Exception as exc:
            if "constraint" in str(exc).lower() or "primary key" in str(exc).lower():
                return False  # a concurrent run claimed it between the check and the insert
            raise

    def release(self, date: str, facility: str, stage: str) -> None:
        """Give a claim back when its digest could not be queued, so that the next run sends it."""
        self._db.execute("DELETE FROM onboarding_digests WHERE digest_date = ? AND facility = ? AND stage = ?",
                         [date, facility[:16], stage])
