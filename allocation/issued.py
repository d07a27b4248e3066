"""The certificate this product issued for a device, from the asset register (certificates table)."""

from __future__ import annotations

import datetime as dt

from allocation.certificate import CertificateDetails
from shared.sql import Database


def _utc(value) -> dt.datetime:
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def issued_certificate(database: Database, device_id: str) -> CertificateDetails | None:
    """The newest active certificate on record for device_id, or None."""
    rows = database.fetch_all(
        "SELECT issuer, serial_number, not_before, not_after FROM certificates "
        "WHERE device_id = ? AND status = 'active' ORDER BY not_after DESC",
        [device_id],
    )
    if not rows:
        return None
    row = rows[0]
    return CertificateDetails(
        subject_cn=device_id,
        issuer=row["issuer"],
        serial_number=int(row["serial_number"], 16),
        not_before=_utc(row["not_before"]),
        not_after=_utc(row["not_after"]),
    )
