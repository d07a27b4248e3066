"""The certificate register: every certificate this product issued (the `certificates` table), written by the
certificate lifecycle and read by allocation. One module, so the two cannot disagree about its shape.

Serial numbers are canonical hex (shared/serials.py), issuers the RFC 4514 DN of the CA, timestamps naive UTC
passed as parameters (shared/times.py). Parameterised, portable statements (Azure SQL and SQLite via ODBC).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.sql import Database
from shared.times import parse_utc, sql_utc

ACTIVE = "active"
# certificates.certificate_pem (migration 0002) is NVARCHAR(4000): a longer PEM is not kept (NULL), never cut.
MAX_PEM_CHARS = 4000
_COLUMNS = "issuer, serial_number, device_id, not_before, not_after, status"
_JOINED = "c.issuer, c.serial_number, c.device_id, c.not_before, c.not_after, c.status, r.reason"
# Values per IN (...) list: Azure SQL takes at most 2,100 parameters per statement, old SQLite builds 999.
IN_CHUNK = 500


@dataclass(frozen=True)
class CertificateRecord:
    issuer: str
    serial_number: str
    device_id: str
    not_before: dt.datetime
    not_after: dt.datetime
    status: str  # active | superseded | revoked


@dataclass(frozen=True)
class CertificateStanding:
    """A certificate on record with its revocation reason, if the revocations table (what every CRL lists) has
    one. Both are needed to judge a certificate: a revocation is recorded before the status is set."""

    record: CertificateRecord
    revocation_reason: str | None


@dataclass(frozen=True)
class LotCertificate:
    """A certificate of a manufacturing lot: the register row, the partner, when it was issued (None before 0004)."""

    record: CertificateRecord
    partner_id: str | None
    issued_at: dt.datetime | None


def _record(row: dict) -> CertificateRecord:
    return CertificateRecord(row["issuer"], row["serial_number"], row["device_id"], parse_utc(row["not_before"]),
                             parse_utc(row["not_after"]), row["status"])


def in_chunks(values: Sequence[str], size: int | None = None) -> Iterable[list[str]]:
    """The values without duplicates, in slices of at most size (IN_CHUNK): one statement per slice, not per value."""
    size = size or IN_CHUNK
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), size):
        yield unique[start:start + size]


def markers(count: int) -> str:
    return ", ".join("?" * count)


def facility_of(device_id: str) -> str | None:
    """The facility segment of a CN sensor-{type}-{facility}-{serial} (no segment holds a hyphen)."""
    parts = device_id.split("-")
    return parts[2] if len(parts) == 4 and parts[0] == "sensor" else None


class CertificateRegister:
    def __init__(self, database: Database):
        self._db = database

    def add_certificate(self, record: CertificateRecord, certificate_pem: str | None = None,
                        partner_id: str | None = None, lot: str | None = None,
                        issued_at: dt.datetime | None = None) -> None:
        """The row, with the certificate itself (PEM) when given: what a revocation for cause pins at DPS; the
        manufacturing partner whose request issued it (migration 0003), when one did; and its manufacturing lot and
        the moment it was issued (migration 0004)."""
        pem = certificate_pem if certificate_pem and len(certificate_pem) <= MAX_PEM_CHARS else None
        self._db.execute(
            f"INSERT INTO certificates ({_COLUMNS}, certificate_pem, partner_id, lot, issued_at) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [record.issuer, record.serial_number, record.device_id, sql_utc(record.not_before),
             sql_utc(record.not_after), record.status, pem, partner_id, lot,
             sql_utc(issued_at) if issued_at is not None else None])

    def lot_certificates(self, lot: str, partner_id: str | None = None) -> list[LotCertificate]:
        """Every certificate recorded with the lot (migration 0004), whatever its status, oldest first; only the
        partner's own when partner_id is given (a partner sees its own lots, never another's of the same name)."""
        where, params = ("lot = ? AND partner_id = ?", [lot, partner_id]) if partner_id is not None \
            else ("lot = ?", [lot])
        rows = self._db.fetch_all(
            f"SELECT {_COLUMNS}, partner_id, issued_at FROM certificates WHERE {where}", params)  # noqa: S608
        found = [LotCertificate(_record(r), r["partner_id"], parse_utc(r["issued_at"]) if r["issued_at"] else None)
                 for r in rows]
        return sorted(found, key=lambda c: (c.issued_at or c.record.not_before, c.record.device_id))

    def active_certificates_of_lot(self, lot: str) -> list[CertificateRecord]:
        """The active certificates recorded with the lot (any partner)."""
        return self._certificates("lot = ? AND status = ?", [lot, ACTIVE])

    def partner_of(self, issuer: str, serial_number: str) -> str | None:
        """The partner recorded on a certificate (None: issued before migration 0003, or by the renewal)."""
        row = self._db.fetch_one("SELECT partner_id FROM certificates WHERE issuer = ? AND serial_number = ?",
                                 [issuer, serial_number])
        return row["partner_id"] if row else None

    def certificate_pems(self, issuer: str, serial_numbers: Sequence[str]) -> dict[str, str]:
        """The issued certificates (PEM) of these serials of one issuer, by serial; serials without one (issued
        before migration 0002, or not by this product) are absent. One statement per IN_CHUNK serials."""
        found: dict[str, str] = {}
        for chunk in in_chunks(serial_numbers):
            rows = self._db.fetch_all(
                "SELECT serial_number, certificate_pem FROM certificates "  # noqa: S608 - markers only
                f"WHERE issuer = ? AND serial_number IN ({markers(len(chunk))}) AND certificate_pem IS NOT NULL",
                [issuer, *chunk])
            found.update({r["serial_number"]: r["certificate_pem"] for r in rows})
        return found

    def _certificates(self, where: str, params: list) -> list[CertificateRecord]:
        sql = f"SELECT {_COLUMNS} FROM certificates WHERE {where} ORDER BY not_after DESC"  # noqa: S608 - fixed clauses
        return [_record(r) for r in self._db.fetch_all(sql, params)]

    def _certificates_in(self, column: str, values: Sequence[str], where: str = "1 = 1",
                         params: Sequence = ()) -> list[CertificateRecord]:
        """Certificates whose column is one of values: one statement per IN_CHUNK values, not one per value."""
        found: list[CertificateRecord] = []
        for chunk in in_chunks(values):
            found += self._certificates(f"{column} IN ({markers(len(chunk))}) AND {where}", [*chunk, *params])
        return found

    def certificates_with_serial(self, serial_number: str) -> list[CertificateRecord]:
        return self._certificates("serial_number = ?", [serial_number])

    def certificates_with_serials(self, serial_numbers: Sequence[str]) -> list[CertificateRecord]:
        """Every certificate on record with one of the serials (any issuer, any status)."""
        return self._certificates_in("serial_number", serial_numbers)

    def active_certificates(self, device_id: str) -> list[CertificateRecord]:
        """The device's active certificates, newest notAfter first."""
        return self._certificates("device_id = ? AND status = ?", [device_id, ACTIVE])

    def device_certificates(self, device_id: str) -> list[CertificateRecord]:
        """Every certificate issued to the device, whatever its status, newest notAfter first."""
        return self._certificates("device_id = ?", [device_id])

    def device_standing(self, device_id: str) -> list[CertificateStanding]:
        """Every certificate issued to the device with its revocation reason: one statement (LEFT JOIN), so the
        webhook's fallback sees the register and the revocations as of one moment, at one round trip."""
        rows = self._db.fetch_all(
            f"SELECT {_JOINED} FROM certificates c LEFT JOIN revocations r "  # noqa: S608 - fixed columns
            "ON r.issuer = c.issuer AND r.serial_number = c.serial_number "
            "WHERE c.device_id = ? ORDER BY c.not_after DESC", [device_id])
        return [CertificateStanding(_record(r), r["reason"]) for r in rows]

    def active_certificates_of_devices(self, device_ids: Sequence[str]) -> list[CertificateRecord]:
        """The active certificates of every listed device."""
        return self._certificates_in("device_id", device_ids, "status = ?", [ACTIVE])

    def active_certificates_of_facility(self, facility: str) -> list[CertificateRecord]:
        """The active certificates of every device of the facility (CN sensor-{type}-{facility}-{serial}).

        LIKE narrows in SQL; the exact segment comparison here makes the match exact (LIKE is case-insensitive
        under most collations and its `_` matches any character). Facility codes are letters and digits only,
        so nothing in the pattern can be a wildcard the caller did not mean."""
        if not (facility.isascii() and facility.isalnum()):
            raise ValueError(f"not a facility code: {facility[:20]!r}")
        found = self._certificates("device_id LIKE ? AND status = ?", [f"sensor-%-{facility}-%", ACTIVE])
        return [r for r in found if facility_of(r.device_id) == facility]

    def mark_provisioned(self, issuer: str, serial_number: str, device_id: str, at: dt.datetime) -> bool:
        """Record that DPS provisioned device_id with this certificate (migration 0005), the first time only. False
        when it is not on record for that device (another device's, or not issued by this product) or was seen
        before: only the certificates this product issued to that device can complete its renewal."""
        return self._db.execute(
            "UPDATE certificates SET provisioned_at = ? WHERE issuer = ? AND serial_number = ? AND device_id = ? "
            "AND provisioned_at IS NULL", [sql_utc(at), issuer, serial_number, device_id]) > 0

    def provisioned_at(self, device_id: str, serial_number: str) -> dt.datetime | None:
        """When DPS first provisioned device_id with the certificate of that serial (any issuer on record for the
        device), or None: not yet, or not this device's."""
        row = self._db.fetch_one(
            "SELECT provisioned_at FROM certificates WHERE device_id = ? AND serial_number = ? "
            "AND provisioned_at IS NOT NULL", [device_id, serial_number])
        return parse_utc(row["provisioned_at"]) if row else None

    def set_status(self, issuer: str, serial_number: str, status: str) -> int:
        return self._db.execute("UPDATE certificates SET status = ? WHERE issuer = ? AND serial_number = ?",
                                [status, issuer, serial_number])

    def set_statuses(self, issuer: str, serial_numbers: Sequence[str], status: str) -> int:
        """set_status for many serials of one issuer, one statement per IN_CHUNK serials."""
        return sum(self._db.execute(
            f"UPDATE certificates SET status = ? WHERE issuer = ? AND serial_number IN ({markers(len(chunk))})",  # noqa: S608
            [status, issuer, *chunk]) for chunk in in_chunks(serial_numbers))
