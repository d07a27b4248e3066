"""The certificate register: every certificate this product issued (the `certificates` table), written by the
certificate lifecycle and read by allocation. One module, so the two cannot disagree about its shape.

Serial numbers are canonical hex (shared/serials.py), issuers the RFC 4514 DN of the CA, timestamps naive UTC
passed as parameters (shared/times.py). Parameterised, portable statements (Azure SQL and SQLite via ODBC).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from shared.sql import Database
from shared.times import parse_utc, sql_utc

ACTIVE = "active"
_COLUMNS = "issuer, serial_number, device_id, not_before, not_after, status"


@dataclass(frozen=True)
class CertificateRecord:
    issuer: str
    serial_number: str
    device_id: str
    not_before: dt.datetime
    not_after: dt.datetime
    status: str  # active | superseded | revoked


class CertificateRegister:
    def __init__(self, database: Database):
        self._db = database

    def add_certificate(self, record: CertificateRecord) -> None:
        self._db.execute(
            f"INSERT INTO certificates ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed columns
            [record.issuer, record.serial_number, record.device_id, sql_utc(record.not_before),
             sql_utc(record.not_after), record.status])

    def _certificates(self, where: str, params: list) -> list[CertificateRecord]:
        sql = f"SELECT {_COLUMNS} FROM certificates WHERE {where} ORDER BY not_after DESC"  # noqa: S608 - fixed clauses
        return [CertificateRecord(r["issuer"], r["serial_number"], r["device_id"], parse_utc(r["not_before"]),
                                  parse_utc(r["not_after"]), r["status"]) for r in self._db.fetch_all(sql, params)]

    def certificates_with_serial(self, serial_number: str) -> list[CertificateRecord]:
        return self._certificates("serial_number = ?", [serial_number])

    def active_certificates(self, device_id: str) -> list[CertificateRecord]:
        """The device's active certificates, newest notAfter first."""
        return self._certificates("device_id = ? AND status = ?", [device_id, ACTIVE])

    def device_certificates(self, device_id: str) -> list[CertificateRecord]:
        """Every certificate issued to the device, whatever its status, newest notAfter first."""
        return self._certificates("device_id = ?", [device_id])

    def set_status(self, issuer: str, serial_number: str, status: str) -> int:
        return self._db.execute("UPDATE certificates SET status = ? WHERE issuer = ? AND serial_number = ?",
                                [status, issuer, serial_number])
