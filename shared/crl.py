"""CRL verification and indexing. Pure: DER bytes and the CA certificate in, a revocation index out.

Trust decisions fail closed: a CRL that cannot be parsed, is not signed by the CA, names another issuer or
is past nextUpdate (plus a grace period) raises CrlInvalid, and the caller refuses every device of that CA.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509

DEFAULT_SECRET_PREFIX = "crl-"  # noqa: S105 - a secret name prefix, not a secret


def crl_secret_name(prefix: str, ca_name: str) -> str:
    """Where the CRL of regional CA `ca_name` lives: the Key Vault secret `{prefix}{ca_name}` (base64 DER).
    The one place that says so: the publisher writes it, the webhook and the seed read it."""
    return f"{prefix}{ca_name}"


class CrlInvalid(Exception):
    """The CRL cannot be trusted; the reason is safe to log."""


@dataclass(frozen=True)
class RevocationIndex:
    issuer: str
    crl_number: int | None
    this_update: dt.datetime
    next_update: dt.datetime
    revoked: frozenset[int]

    def is_revoked(self, serial_number: int) -> bool:
        return serial_number in self.revoked

    def __len__(self) -> int:
        return len(self.revoked)


def verify_and_index(der: bytes, ca: x509.Certificate, now: dt.datetime,
                     grace: dt.timedelta = dt.timedelta(0)) -> RevocationIndex:
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise CrlInvalid(f"unreadable CRL: {exc}") from None
    if crl.issuer != ca.subject:
        raise CrlInvalid(f"CRL issuer {crl.issuer.rfc4514_string()} is not {ca.subject.rfc4514_string()}")
    try:
        valid = crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise CrlInvalid(f"CRL signature cannot be checked: {exc}") from None
    if not valid:
        raise CrlInvalid("CRL signature does not verify with the CA's public key")
    next_update = crl.next_update_utc
    if next_update is None:
        raise CrlInvalid("CRL has no nextUpdate")
    if now > next_update + grace:
        raise CrlInvalid(f"CRL expired at {next_update.isoformat()} (grace {grace})")
    if crl.last_update_utc > now + dt.timedelta(minutes=5):
        raise CrlInvalid("CRL thisUpdate is in the future")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return RevocationIndex(
        issuer=ca.subject.rfc4514_string(),
        crl_number=number,
        this_update=crl.last_update_utc,
        next_update=next_update,
        revoked=frozenset(entry.serial_number for entry in crl),
    )
