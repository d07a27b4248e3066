"""The certificates this product issued to a device, from the certificate register (shared/certificates.py).

The webhook reads them only when DPS sends no certificate details; allocation/decision.py decides whether one of
them may stand in for the certificate the device presented.
"""

from __future__ import annotations

from shared.certificates import CertificateRegister, CertificateStanding
from shared.sql import Database


def issued_certificate(database: Database, device_id: str) -> list[CertificateStanding]:
    """Every certificate on record for device_id with its revocation reason (one statement), newest first."""
    return CertificateRegister(database).device_standing(device_id)
