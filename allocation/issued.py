"""The certificate this product issued for a device, from the certificate register (shared/certificates.py)."""

from __future__ import annotations

from allocation.certificate import CertificateDetails
from shared.certificates import CertificateRegister
from shared.serials import serial_int
from shared.sql import Database


def issued_certificate(database: Database, device_id: str) -> CertificateDetails | None:
    """The newest active certificate on record for device_id, or None."""
    found = CertificateRegister(database).active_certificates(device_id)
    if not found:
        return None
    newest = found[0]
    return CertificateDetails(subject_cn=device_id, issuer=newest.issuer,
                              serial_number=serial_int(newest.serial_number),
                              not_before=newest.not_before, not_after=newest.not_after)
