"""The one audit writer: provisioning_events (the onboarding trail: allocations, refusals, twin setup failures),
certificate_events (issuance, refusals, revocations, CRL publications, scans, renewal steps) and onboarding_stages
(the funnel: one row per sensor and stage reached, migration 0007).

Best effort with respect to the decision being audited: a failed write is logged loudly and reported as False,
never turned into a different outcome. Details are JSON text, cut to MAX_DETAILS characters; no secrets.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from shared.sql import Database
from shared.times import sql_utc, utc_now

log = logging.getLogger(__name__)
MAX_DETAILS = 4000


def _details(details: dict[str, Any] | None) -> str:
    return json.dumps(details or {}, default=str, sort_keys=True)[:MAX_DETAILS]


def _cut(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None


def _now():
    return sql_utc(utc_now(), whole_seconds=False)


# Devices per SELECT and rows per INSERT of onboarding_stages: 7 parameters a row stays under SQLite's oldest limit
# of 999 parameters per statement (Azure SQL allows 2,100 parameters and 1,000 rows).
STAGE_CHUNK = 140


@dataclass(frozen=True)
class StageRow:
    """A sensor reached a funnel stage at `at` (a datetime), as the onboarding_stages table records it."""

    device_id: str
    stage: str
    at: Any
    hub: str | None = None
    facility: str | None = None
    details: dict[str, Any] | None = None


class AuditWriter:
    def __init__(self, database: Database):
        self._db = database

    def _insert(self, sql: str, params: list, what: str) -> bool:
        try:
            self._db.execute(sql, params)
        except Exception as exc:  # noqa: BLE001 - the audit must not change the outcome
            log.error("audit write failed (%s): %s", what, type(exc).__name__)
            return False
        return True

    def provisioning(self, registration_id: str, outcome: str, reason_code: str | None, hub: str | None,
                     details: dict[str, Any] | None) -> bool:
        """One provisioning_events row; outcome: allocated | rejected | error (the schema's CHECK)."""
        return self._insert(
            "INSERT INTO provisioning_events (event_id, at, registration_id, outcome, reason_code, hub, details) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [str(uuid.uuid4()), _now(), registration_id[:128], outcome, reason_code, hub,
             _details(details)],
            f"{registration_id[:128]} {outcome}")

    def certificate_event(self, action: str, *, device_id: str | None = None, issuer: str | None = None,
                          serial_number: str | None = None, reason_code: str | None = None,
                          actor: str | None = None, details: dict[str, Any] | None = None) -> bool:
        """One certificate_events row."""
        return self._insert(
            "INSERT INTO certificate_events (event_id, at, action, device_id, issuer, serial_number, reason_code, "
            "actor, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [str(uuid.uuid4()), _now(), action[:32], _cut(device_id, 128), _cut(issuer, 255),
             serial_number, reason_code, _cut(actor, 255), _details(details)],
            f"{action} {device_id or ''}".strip())

    def onboarding_stages(self, rows: list[StageRow]) -> set[tuple[str, str]] | None:
        """onboarding_stage for many rows at a few statements: one SELECT per STAGE_CHUNK devices for the rows
        already there, then multi-row INSERTs of the others (a rollout of thousands of sensors reaches tens of
        thousands of stages; one round trip each held the database's write lock against the webhook). A chunk that a
        concurrent writer got to first is written row by row. Returns the (device_id, stage) pairs this call added,
        or None when SQL failed (logged): the caller keeps the tags, so the next run audits them again."""
        wanted: dict[tuple[str, str], StageRow] = {}
        for row in rows:
            wanted.setdefault((row.device_id[:128], row.stage), row)
        if not wanted:
            return set()
        try:
            devices = sorted({device for device, _ in wanted})
            present: set[tuple[str, str]] = set()
            for start in range(0, len(devices), STAGE_CHUNK):
                chunk = devices[start:start + STAGE_CHUNK]
                found = self._db.fetch_all(
                    "SELECT device_id, stage FROM onboarding_stages "  # noqa: S608 - markers only
                    f"WHERE device_id IN ({', '.join('?' * len(chunk))})", chunk)
                present |= {(r["device_id"], r["stage"]) for r in found}
            missing = [key for key in wanted if key not in present]
            added: set[tuple[str, str]] = set()
            recorded_at = _now()
            for start in range(0, len(missing), STAGE_CHUNK):
                chunk = missing[start:start + STAGE_CHUNK]
                values = [v for key in chunk for v in self._stage_values(wanted[key], recorded_at)]
                try:
                    markers = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                    self._db.execute(
                        "INSERT INTO onboarding_stages (device_id, stage, at, recorded_at, hub, facility, details) "  # noqa: S608 - markers only
                        f"VALUES {markers}", values)
                    added |= set(chunk)
                except Exception:  # noqa: BLE001 - a concurrent run wrote one of them: row by row, once each
                    for key in chunk:
                        row = wanted[key]
                        if self.onboarding_stage(row.device_id, row.stage, row.at, hub=row.hub,
                                                 facility=row.facility, details=row.details):
                            added.add(key)
        except Exception as exc:  # noqa: BLE001 - the audit must not change the outcome
            log.error("audit write failed (%d onboarding stages): %s", len(wanted), type(exc).__name__)
            return None
        return added

    @staticmethod
    def _stage_values(row: StageRow, recorded_at) -> list:
        return [row.device_id[:128], row.stage, sql_utc(row.at, whole_seconds=False), recorded_at,
                _cut(row.hub, 255), _cut(row.facility, 16), _details(row.details)]

    def onboarding_stage(self, device_id: str, stage: str, at, *, hub: str | None = None,
                         facility: str | None = None, details: dict[str, Any] | None = None) -> bool | None:
        """One onboarding_stages row: the sensor reached `stage` at `at` (a datetime). Once per sensor and stage: a
        row already there is kept (a re-run or a redelivery adds none; the primary key stops a concurrent one).
        True when this call added the row, False when it was there, None when the write failed (logged)."""
        try:
            added = self._db.execute(
                "INSERT INTO onboarding_stages (device_id, stage, at, recorded_at, hub, facility, details) "
                "SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM onboarding_stages WHERE device_id = ? AND stage = ?)",
                [device_id[:128], stage, sql_utc(at, whole_seconds=False), _now(), _cut(hub, 255),
                 _cut(facility, 16), _details(details), device_id[:128], stage])
        except Exception as exc:  # noqa: BLE001 - the audit must not change the outcome
            log.error("audit write failed (%s %s): %s", device_id[:128], stage, type(exc).__name__)
            return None
        return added == 1
