"""SQL for the certificate lifecycle: the certificate register (shared/certificates.py, which allocation reads
too), revocations and facilities. Parameterised, portable statements (Azure SQL and SQLite through ODBC).

Revocations: the `revocations` table is the source of truth for every CRL; serials are canonical hex
(shared/serials.py), issuers the CA's RFC 4514 DN, timestamps naive UTC passed as parameters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from shared.certificates import CertificateRecord, CertificateRegister, in_chunks, markers
from shared.facilities import Facility, FacilityDirectory
from shared.sql import Database
from shared.times import parse_utc, sql_utc

__all__ = ["CertificateRecord", "CertificateRecords", "RevocationRecord"]
# Rows per multi-row INSERT: 5 parameters a row stays under SQLite's oldest limit of 999 parameters per statement
# (Azure SQL allows 2,100 parameters and 1,000 rows).
INSERT_ROWS = 190
_REVOCATION_COLUMNS = "issuer, serial_number, reason, revoked_at, revoked_by"


@dataclass(frozen=True)
class RevocationRecord:
    serial_number: str
    reason: str
    revoked_at: dt.datetime
    not_after: dt.datetime | None  # of the certificate, when it is on record
    revoked_by: str | None = None


class CertificateRecords(CertificateRegister):
    """The register plus what only the lifecycle needs: revocations and facility look-ups."""

    def __init__(self, database: Database, facility_ttl_s: float = 60):
        super().__init__(database)
        self._db = database
        self._facilities = FacilityDirectory(database, facility_ttl_s)

    # -- facilities --------------------------------------------------------------------------------
    def facility(self, code: str) -> Facility | None:
        return self._facilities.find(code)

    def active_facility(self, code: str) -> Facility:
        """The active facility; raises unknown_facility, facility_inactive or dependency_unavailable."""
        return self._facilities.get(code)

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
                [issuer, serial_number, reason, sql_utc(revoked_at), revoked_by[:255]])
        except Exception:
            if self.revocation(issuer, serial_number) is not None:  # a concurrent revocation won the race
                return False
            raise
        return True

    def add_revocations(self, issuer: str, serial_numbers: Sequence[str], reason: str, revoked_at: dt.datetime,
                        revoked_by: str) -> tuple[set[str], dict[str, RevocationRecord]]:
        """add_revocation for many serials of one issuer in a few statements, so a bulk revocation costs SQL round
        trips per hundreds of serials, not per serial: (the serials whose row is new, the rows that were already
        there). A slice that meets a concurrent revocation of one of its serials is retried row by row."""
        existing = self.revocations_of(issuer, serial_numbers)
        inserted: set[str] = set()
        for chunk in in_chunks([s for s in serial_numbers if s not in existing], INSERT_ROWS):
            rows = [[issuer, serial, reason, sql_utc(revoked_at), revoked_by[:255]] for serial in chunk]
            try:
                values = ", ".join(["(?, ?, ?, ?, ?)"] * len(rows))
                self._db.execute(f"INSERT INTO revocations ({_REVOCATION_COLUMNS}) VALUES {values}",  # noqa: S608
                                 [value for row in rows for value in row])
                inserted.update(chunk)
            except Exception:  # noqa: BLE001 - one row of the slice exists now: row by row, as add_revocation does
                inserted.update(s for s in chunk if self.add_revocation(issuer, s, reason, revoked_at, revoked_by))
        raced = [s for s in serial_numbers if s not in existing and s not in inserted]
        return inserted, {**existing, **self.revocations_of(issuer, raced)}

    def revocations_of(self, issuer: str, serial_numbers: Sequence[str]) -> dict[str, RevocationRecord]:
        """The issuer's revocations of the serials that have one, by serial."""
        found: dict[str, RevocationRecord] = {}
        for chunk in in_chunks(serial_numbers):
            rows = self._db.fetch_all(
                "SELECT serial_number, reason, revoked_at, revoked_by FROM revocations "  # noqa: S608 - markers only
                f"WHERE issuer = ? AND serial_number IN ({markers(len(chunk))})", [issuer, *chunk])
            found.update({r["serial_number"]: RevocationRecord(r["serial_number"], r["reason"],
                                                               parse_utc(r["revoked_at"]), None, r["revoked_by"])
                          for r in rows})
        return found

    def revocation(self, issuer: str, serial_number: str) -> RevocationRecord | None:
        row = self._db.fetch_one(
            "SELECT serial_number, reason, revoked_at, revoked_by FROM revocations "
            "WHERE issuer = ? AND serial_number = ?",
            [issuer, serial_number])
        return None if row is None else RevocationRecord(row["serial_number"], row["reason"],
                                                         parse_utc(row["revoked_at"]), None, row["revoked_by"])

    def revocations(self, issuer: str) -> list[RevocationRecord]:
        """Every revocation of the issuer, with the certificate's notAfter when it is on record."""
        rows = self._db.fetch_all(
            "SELECT r.serial_number, r.reason, r.revoked_at, c.not_after FROM revocations r "
            "LEFT JOIN certificates c ON c.issuer = r.issuer AND c.serial_number = r.serial_number "
            "WHERE r.issuer = ?", [issuer])
        return [RevocationRecord(r["serial_number"], r["reason"], parse_utc(r["revoked_at"]),
                                 parse_utc(r["not_after"])) for r in rows]
