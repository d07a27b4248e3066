"""X.509 chain validation as DPS does it before calling the webhook: RFC 5280 path validation (cryptography's
verifier) from the device certificate to a trusted root, through the enrollment group's CA."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError


class ChainError(Exception):
    pass


def _client_auth(_policy, _cert, eku) -> None:
    if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise ValueError("extended key usage does not allow clientAuth")


# Device certificates identify themselves by CN (the registration ID) and need no subjectAltName, which the
# Web PKI defaults demand; everything else about the end entity is checked as the Web PKI does.
_DEVICE_POLICY = (ExtensionPolicy.permit_all()
                  .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _client_auth))


def validate_chain(leaf: x509.Certificate, intermediates: list[x509.Certificate], roots: list[x509.Certificate],
                   required_ca: x509.Certificate | None, now: dt.datetime) -> list[x509.Certificate]:
    """The validated chain (leaf first); raise ChainError when it does not lead to a root through required_ca."""
    verifier = (PolicyBuilder().store(Store(roots)).time(now)
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_DEVICE_POLICY)
                .build_client_verifier())
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise ChainError(f"certificate chain invalid: {exc}") from None
    chain = list(verified.chain)
    if required_ca is not None and required_ca not in chain[1:]:
        raise ChainError("certificate not issued under the enrollment group's CA")
    return chain
