"""What DPS tells the webhook about the device certificate, in every shape it may take. Pure.

docs/contracts.md 1: Microsoft publishes no example of deviceRuntimeContext.x509. The primary shape (seen in the one
public X.509 webhook) is `x509.clientCertificate` = base64 DER; PEM is accepted too, and an
X509CertificateInfo-style object (subjectName, issuerName, serialNumber, notBeforeUtc, notAfterUtc,
thumbprints) is tolerated, directly or under `info`. A correction to the contract is a change to this file.
A certificate from the register (when DPS sends none; allocation/decision.py says when that may stand in) is
turned into the same CertificateDetails here too, so every certificate the webhook judges is read in one place.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.x509.oid import NameOID

from shared.certificates import CertificateRecord
from shared.errors import OnboardingError
from shared.serials import parse_serial, serial_hex, serial_int
from shared.times import parse_utc

MAX_CERTIFICATE_CHARS = 16_384


@dataclass(frozen=True)
class CertificateDetails:
    subject_cn: str | None
    issuer: str  # RFC 4514 string of the issuer DN
    serial_number: int
    not_before: dt.datetime
    not_after: dt.datetime
    certificate: x509.Certificate | None = None  # when DPS passed the whole certificate

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.serial_number)


@lru_cache(maxsize=256)
def distinguished_name(name: x509.Name) -> str:
    """RFC 4514 form of a DN; cached because a fleet has a handful of issuers and rendering is not free."""
    return name.rfc4514_string()


def _common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def from_certificate(cert: x509.Certificate) -> CertificateDetails:
    return CertificateDetails(
        subject_cn=_common_name(cert.subject),
        issuer=distinguished_name(cert.issuer),
        serial_number=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        certificate=cert,
    )


def from_register(record: CertificateRecord) -> CertificateDetails:
    """The details of a certificate this product issued, as the register holds them (no certificate object: the
    trust store checks issuer and CRL, as it does for the certificate-info shape)."""
    return CertificateDetails(subject_cn=record.device_id, issuer=record.issuer,
                              serial_number=serial_int(record.serial_number),
                              not_before=record.not_before, not_after=record.not_after)


def _load_certificate(text: str) -> x509.Certificate:
    if len(text) > MAX_CERTIFICATE_CHARS:
        raise OnboardingError("certificate_invalid", "certificate too large")
    try:
        if "-----BEGIN CERTIFICATE-----" in text:
            return x509.load_pem_x509_certificate(text.encode("ascii"))
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise OnboardingError("certificate_invalid", f"not a base64 DER or PEM certificate: {exc}") from None


def _timestamp(value: object, field: str) -> dt.datetime:
    if not isinstance(value, str):
        raise OnboardingError("certificate_invalid", f"{field} missing")
    parsed = parse_utc(value)
    if parsed is None:
        raise OnboardingError("certificate_invalid", f"{field} is not an ISO-8601 time")
    return parsed


def _from_info(info: dict) -> CertificateDetails:
    subject, issuer, serial = info.get("subjectName"), info.get("issuerName"), info.get("serialNumber")
    if not isinstance(issuer, str) or not isinstance(serial, str) or not isinstance(subject, str):
        raise OnboardingError("certificate_invalid", "certificate info lacks subjectName/issuerName/serialNumber")
    serial_number = parse_serial(serial)
    if serial_number is None:
        raise OnboardingError("certificate_invalid", "serialNumber is not hexadecimal")
    try:
        subject_cn = _common_name(x509.Name.from_rfc4514_string(subject))
        issuer_dn = x509.Name.from_rfc4514_string(issuer).rfc4514_string()
    except ValueError:
        raise OnboardingError("certificate_invalid", "subjectName/issuerName is not a distinguished name") from None
    return CertificateDetails(subject_cn, issuer_dn, serial_number,
                              _timestamp(info.get("notBeforeUtc"), "notBeforeUtc"),
                              _timestamp(info.get("notAfterUtc"), "notAfterUtc"))


def parse_x509_context(x509_context: object) -> CertificateDetails | None:
    """CertificateDetails from deviceRuntimeContext.x509, or None when it carries no certificate details."""
    if not isinstance(x509_context, dict):
        raise OnboardingError("invalid_request", "deviceRuntimeContext.x509 must be an object")
    client = x509_context.get("clientCertificate")
    if isinstance(client, str) and client.strip():
        return from_certificate(_load_certificate(client.strip()))
    for candidate in (client, x509_context.get("info"), x509_context):
        if isinstance(candidate, dict):
            inner = candidate.get("info", candidate)
            if isinstance(inner, dict) and "serialNumber" in inner:
                return _from_info(inner)
    return None
