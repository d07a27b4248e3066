"""SQL for the certificate lifecycle: the asset register (certificates), revocations, facilities, and the audit
trail of certificate events. Parameterised, portable statements (Azure SQL and SQLite through ODBC).

Serial numbers are stored as upper-case hex without leading zeros and issuers as the RFC 4514 DN of the CA,
the forms allocation/ reads (allocation/issued.py). Timestamps are naive UTC, passed as parameters.

The audit trail is the table `certificate_events` (infra/sql/schema.sql; provisioning_events is the onboarding
trail). Audit writes are best effort: a failed write is
logged loudly and never changes a decision.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass

from shared.facilities import Facility, FacilityDirectory
from shared.sql import Database

log = logging.getLogger(__name__)
MAX_DETAILS = 4000



def _naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None, microsecond=0)


def utc(value) -> dt.datetime | None:
    if value is None:
        return None
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class CertificateRecord:
    issuer: str
    serial_number: str
    device_id: str
    not_before: dt.datetime
    not_after: dt.datetime
    status: str


@dataclass(frozen=True)
class RevocationRecord:
    serial_number: str
    reason: str
    revoked_at: dt.datetime
    not_after: dt.datetime | None  # of the certificate, when it is on record


class CertificateRecords:
    def __init__(self, database: Database, facility_ttl_s: float = 60):
        self._db = database
        self._facilities = FacilityDirectory(database, facility_ttl_s)

    # -- facilities --------------------------------------------------------------------------------
    def facility(self, code: str) -> Facility | None:
        return self._facilities.find(code)

    def active_facility(self, code: str) -> Facility:
        """The active facility; raises unknown_facility, facility_inactive or dependency_unavailable."""
        return self._facilities.get(code)

    # -- the asset register ------------------------------------------------------------------------
    def add_certificate(self, record: CertificateRecord) -> None:
        self._db.execute(
            "INSERT INTO certificates (issuer, serial_number, device_id, not_before, not_after, status) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [record.issuer, record.serial_number, record.device_id, _naive(record.not_before),
             _naive(record.not_after), record.status])

    def _certificates(self, where: str, params: list) -> list[CertificateRecord]:
        columns = "issuer, serial_number, device_id, not_before, not_after, status"
        sql = f"SELECT {columns} FROM certificates WHERE {where} ORDER BY not_after DESC"  # noqa: S608 - fixed clauses
        rows = self._db.fetch_all(sql, params)
        return [CertificateRecord(r["issuer"], r["serial_number"], r["device_id"], utc(r["not_before"]),
                                  utc(r["not_after"]), r["status"]) for r in rows]

    def certificates_with_serial(self, serial_number: str) -> list[CertificateRecord]:
        return self._certificates("serial_number = ?", [serial_number])

    def active_certificates(self, device_id: str) -> list[CertificateRecord]:
        return self._certificates("device_id = ? AND status = 'active'", [device_id])

    def set_status(self, issuer: str, serial_number: str, status: str) -> int:
        return self._db.execute("UPDATE certificates SET status = ? WHERE issuer = ? AND serial_number = ?",
                                [status, issuer, serial_number])

    # -- revocations -------------------------------------------------------------------------------
    def add_revocation(self, issuer: str, serial_number: str, reason: str, revoked_at: dt.datetime,
                       revoked_by: str) -> bool:
        """True when the row is new; False when the serial was already revoked by this issuer (idempotent)."""
        if self.revocation(issuer, serial_number) is not None:
            return False
        try:
            self._db.execute(
                "INSERT INTO revocations (issuer, serial_number, reason, revoked_at, revoked_by) "
                "VALUES (?, ?, ?, ?, ?)",
                [issuer, serial_number, reason, _naive(revoked_at), revoked_by[:255]])
        except Exception:
            if self.revocation(issuer, serial_number) is not None:  # a concurrent revocation won the race
                return False
            raise
        return True

    def revocation(self, issuer: str, serial_number: str) -> RevocationRecord | None:
        row = self._db.fetch_one(
            "SELECT serial_number, reason, revoked_at FROM revocations WHERE issuer = ? AND serial_number = ?",
            [issuer, serial_number])
        return None if row is None else RevocationRecord(row["serial_number"], row["reason"], utc(row["revoked_at"]),
                                                         None)

    def revocations(self, issuer: str) -> list[RevocationRecord]:
        """Every revocation of the issuer, with the certificate's notAfter when it is on record."""
        rows = self._db.fetch_all(
            "SELECT r.serial_number, r.reason, r.revoked_at, c.not_after FROM revocations r "
            "LEFT JOIN certificates c ON c.issuer = r.issuer AND c.serial_number = r.serial_number "
            "WHERE r.issuer = ?", [issuer])
        return [RevocationRecord(r["serial_number"], r["reason"], utc(r["revoked_at"]), utc(r["not_after"]))
                for r in rows]


class CertificateAudit:
    """certificate_events rows: issuance, refusals, revocations, CRL publications, scans, renewal steps."""

    def __init__(self, database: Database):
        self._db = database

    def record(self, action: str, *, device_id: str | None = None, issuer: str | None = None,
               serial_number: str | None = None, reason_code: str | None = None, actor: str | None = None,
               details: dict | None = None) -> bool:
        text = json.dumps(details or {}, default=str, sort_keys=True)[:MAX_DETAILS]
        try:
            self._db.execute(
                "INSERT INTO certificate_events (event_id, at, action, device_id, issuer, serial_number, reason_code, "
                "actor, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [str(uuid.uuid4()), dt.datetime.now(dt.UTC).replace(tzinfo=None), action[:32],
                 (device_id or None) and device_id[:128], issuer and issuer[:255], serial_number, reason_code,
                 actor and actor[:255], text])
        except Exception as exc:  # noqa: BLE001 - the audit must not change the outcome
            log.error("certificate audit write failed (%s, %s): %s", action, device_id, type(exc).__name__)
            return False
        return True
