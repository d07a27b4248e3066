"""Where a regional CA's CRL lives, and how a CRL is verified and indexed. Pure: no I/O.

The one place that says where a CRL lives (docs/architecture.md 4): the Blob container `CRL_CONTAINER` (default
`crl`) holds `{ca name}.crl`, the DER CRL (application/pkix-crl), and `{ca name}-{key id}.crt`, the DER certificate
of each key the CA has signed with (application/pkix-cert). Relying parties reach both at
`CRL_DISTRIBUTION_URL/{blob}`, the URL every certificate the CA issues names in its CRL Distribution Points and
Authority Information Access extensions (RFC 5280 4.2.1.13 and 4.2.2.1: an HTTP URI there points to a single DER
CRL or certificate). The publisher (cert_lifecycle/crl.py) writes them, the webhook (allocation/trust.py) reads
the CRL with its identity, the local seed publishes the first ones.

Trust decisions fail closed: a CRL that cannot be parsed, is not signed by a current key of the CA, names another
issuer, has no CRL number or is past nextUpdate (plus a grace period) raises CrlInvalid, and the caller refuses
every device of that CA.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509

DEFAULT_CONTAINER = "crl"
# RFC 2585 section 4 names the media types; RFC 5280 4.2.1.13 and 4.2.2.1 require a single DER object at the URI.
CRL_CONTENT_TYPE = "application/pkix-crl"
CA_CERTIFICATE_CONTENT_TYPE = "application/pkix-cert"
KEY_ID_CHARS = 16  # hex characters of the key identifier in a CA certificate's blob name (64 bits: unique per CA)


def crl_blob_name(ca_name: str) -> str:
    """The CRL of regional CA `ca_name`: one blob per CA, whichever key signed it (RFC 5280 6.3.3 accepts a CRL
    signed by any key of the certificate's issuer that the relying party can validate), so its URL never changes."""
    return f"{ca_name}.crl"


def ca_certificate_blob_name(ca_name: str, key_id: bytes) -> str:
    """The certificate of one key of the CA. Named by key so that a certificate issued before a CA key rotation
    still finds the certificate of the key that signed it through its Authority Information Access URL."""
    return f"{ca_name}-{key_id.hex()[:KEY_ID_CHARS]}.crt"


@dataclass(frozen=True)
class CrlLocation:
    """The container the CRLs live in and the public base URL relying parties read them from."""

    container: str
    public_url: str  # no trailing slash

    def crl_url(self, ca_name: str) -> str:
        return f"{self.public_url}/{crl_blob_name(ca_name)}"

    def ca_certificate_url(self, ca_name: str, key_id: bytes) -> str:
        return f"{self.public_url}/{ca_certificate_blob_name(ca_name, key_id)}"


@lru_cache(maxsize=256)
def key_identifier(ca: x509.Certificate) -> bytes:
    """The CA key's identifier: its subjectKeyIdentifier, else the RFC 5280 4.2.1.2 method (1) hash of its public
    key. Certificates and CRLs the CA signs carry it as their authorityKeyIdentifier (5.2.1, 4.2.1.1). Cached: a
    fleet has a handful of CA versions and every allocation asks."""
    try:
        return ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest  # type: ignore[arg-type]


def authority_key_id(signed: x509.Certificate | x509.CertificateRevocationList) -> bytes | None:
    """The key identifier a certificate or CRL names its signer by, if it names one."""
    try:
        return signed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def signer_candidates(versions: Sequence[x509.Certificate], named_key: bytes | None) -> list[x509.Certificate]:
    """The CA versions to check a signature with: the one whose key the signed object names first, then the rest
    (an object without an authorityKeyIdentifier, or naming a key by another method, still verifies)."""
    return sorted(versions, key=lambda v: key_identifier(v) != named_key)


@dataclass(frozen=True)
class CrlMetadata:
    """What the publisher records beside a CRL blob (its metadata), so that a reader can tell the CRL's number and
    nextUpdate without downloading and parsing it (the health check; the number when the CRL itself is broken)."""

    ca: str | None
    number: int | None
    entries: int | None
    this_update: dt.datetime | None
    next_update: dt.datetime | None

    def to_metadata(self) -> dict[str, str]:
        # Blob metadata names are C# identifiers, case-insensitive; values ASCII (Set Blob Metadata).
        values = {"ca": self.ca, "crlnumber": self.number, "entries": self.entries,
                  "thisupdate": self.this_update and _iso(self.this_update),
                  "nextupdate": self.next_update and _iso(self.next_update)}
        return {k: str(v) for k, v in values.items() if v is not None}


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _moment(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _count(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def crl_metadata(metadata: dict[str, str]) -> CrlMetadata:
    """The publisher's record from a CRL blob's metadata (absent or malformed fields are None)."""
    lowered = {k.lower(): v for k, v in (metadata or {}).items()}
    return CrlMetadata(lowered.get("ca"), _count(lowered.get("crlnumber")), _count(lowered.get("entries")),
                       _moment(lowered.get("thisupdate")), _moment(lowered.get("nextupdate")))


class CrlInvalid(Exception):
    """The CRL cannot be trusted; the reason is safe to log."""


@dataclass(frozen=True)
class RevocationIndex:
    issuer: str
    crl_number: int
    this_update: dt.datetime
    next_update: dt.datetime
    revoked: frozenset[int]

    def is_revoked(self, serial_number: int) -> bool:
        return serial_number in self.revoked

    def __len__(self) -> int:
        return len(self.revoked)


def crl_number(der: bytes) -> int | None:
    """The CRL number of a DER CRL, without verifying anything (the publisher continues the sequence from it)."""
    try:
        return x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (ValueError, x509.ExtensionNotFound):
        return None


def verify_and_index(der: bytes, ca: x509.Certificate | Sequence[x509.Certificate], now: dt.datetime,
                     grace: dt.timedelta = dt.timedelta(0)) -> RevocationIndex:
    """The revoked serials of a CRL signed by `ca` (one certificate, or every current version of a CA).

    A CA renewed with a new key has several current versions under one name; its CRL is signed with the newest key
    but certificates of the older ones are still in the field, so the CRL is checked against every version with the
    CRL's issuer name (RFC 5280 6.3.3 (f)-(g): the CRL issuer's key must be one the relying party validates)."""
    versions = [ca] if isinstance(ca, x509.Certificate) else list(ca)
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise CrlInvalid(f"unreadable CRL: {exc}") from None
    issuers = [v for v in versions if v.subject == crl.issuer]
    if not issuers:
        expected = versions[0].subject.rfc4514_string() if versions else "(no CA certificate)"
        raise CrlInvalid(f"CRL issuer {crl.issuer.rfc4514_string()} is not {expected}")
    try:
        named_key = authority_key_id(crl)
    except ValueError:
        named_key = None
    for candidate in signer_candidates(issuers, named_key):
        try:
            if crl.is_signature_valid(candidate.public_key()):  # type: ignore[arg-type]
                break
        except (TypeError, ValueError) as exc:
            raise CrlInvalid(f"CRL signature cannot be checked: {exc}") from None
    else:
        raise CrlInvalid("CRL signature does not verify with any current key of the CA")
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
        # RFC 5280 5.2.3: conforming issuers MUST include it; without one a rolled-back CRL cannot be told apart.
        raise CrlInvalid("CRL has no CRL number") from None
    return RevocationIndex(
        issuer=crl.issuer.rfc4514_string(),
        crl_number=number,
        this_update=crl.last_update_utc,
        next_update=next_update,
        revoked=frozenset(entry.serial_number for entry in crl),
    )
