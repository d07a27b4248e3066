"""Certificate signing requests: checked, then turned into a device certificate builder. Pure.

Order of checks (each failure a catalogue code, never a 500): size, PEM/DER readability (csr_invalid), the
CSR's own signature, i.e. proof that the requester holds the private key (csr_signature_invalid), exactly one
CN that is a valid device ID (invalid_registration_id / unknown_sensor_type, or csr_subject_mismatch when a
renewal names another device), and the key policy: EC P-256/P-384 or RSA >= 2048 bits (weak_key).

Nothing the requester asks for beyond its public key and CN reaches the certificate: extensions in the CSR
(a CA flag, extra EKUs, SANs) are ignored; the profile below is the CA's, always.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from cert_lifecycle.signer import authority_key_identifier
from shared.errors import OnboardingError
from shared.identity import DeviceIdentity, parse_device_id

ALLOWED_CURVES = {"secp256r1": 256, "secp384r1": 384}
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
PEM_HEADER = "-----BEGIN CERTIFICATE REQUEST-----"
NEW_PEM_HEADER = "-----BEGIN NEW CERTIFICATE REQUEST-----"


@dataclass(frozen=True)
class CheckedCsr:
    csr: x509.CertificateSigningRequest
    identity: DeviceIdentity
    key_description: str  # "EC P-256", "RSA 3072": safe to log


def describe_key(public_key) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    return type(public_key).__name__.removeprefix("_")


def check_key_policy(public_key) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ALLOWED_CURVES:
            raise OnboardingError("weak_key", f"curve {public_key.curve.name} (allowed: P-256, P-384)")
        return f"EC P-{ALLOWED_CURVES[public_key.curve.name]}"
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise OnboardingError("weak_key", f"RSA {public_key.key_size} bits (at least {MIN_RSA_BITS})")
        if public_key.key_size > MAX_RSA_BITS:
            raise OnboardingError("weak_key", f"RSA {public_key.key_size} bits (at most {MAX_RSA_BITS})")
        if public_key.public_numbers().e < 65537:
            raise OnboardingError("weak_key", "RSA public exponent below 65537")
        return f"RSA {public_key.key_size}"
    raise OnboardingError("weak_key", f"{describe_key(public_key)} keys are not allowed")


def load_csr(text: str | bytes, max_bytes: int) -> x509.CertificateSigningRequest:
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
    if len(raw) > max_bytes:
        raise OnboardingError("request_too_large", f"CSR of {len(raw)} bytes (at most {max_bytes})")
    stripped = raw.strip()
    if not stripped:
        raise OnboardingError("csr_invalid", "empty CSR")
    try:
        if stripped.startswith(b"-----BEGIN"):
            if NEW_PEM_HEADER.encode() in stripped:  # the legacy header some tools write
                stripped = stripped.replace(b"NEW CERTIFICATE REQUEST", b"CERTIFICATE REQUEST")
            return x509.load_pem_x509_csr(stripped)
        return x509.load_der_x509_csr(raw)  # binary: its last signature bytes may well look like whitespace
    except (ValueError, TypeError) as exc:
        raise OnboardingError("csr_invalid", f"not a PEM or DER PKCS#10 request ({type(exc).__name__})") from None


def _common_name(csr: x509.CertificateSigningRequest) -> str:
    try:
        values = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        raise OnboardingError("csr_invalid", "unreadable subject") from None
    if len(values) != 1 or not isinstance(values[0].value, str):
        raise OnboardingError("invalid_registration_id", f"the CSR subject needs exactly one CN, has {len(values)}")
    return values[0].value


def check_csr(text: str | bytes, max_bytes: int, expected_device_id: str | None = None) -> CheckedCsr:
    """The CSR if the CA may sign it; else raise OnboardingError with the catalogue code."""
    csr = load_csr(text, max_bytes)
    try:
        public_key = csr.public_key()
    except (ValueError, TypeError):
        raise OnboardingError("weak_key", "unsupported or unreadable public key") from None
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError):  # unsupported signature algorithm
        valid = False
    if not valid:
        raise OnboardingError("csr_signature_invalid")
    cn = _common_name(csr)
    identity = parse_device_id(cn)
    if expected_device_id is not None and cn != expected_device_id:
        raise OnboardingError("csr_subject_mismatch", f"CN {cn} for device {expected_device_id}")
    return CheckedCsr(csr, identity, check_key_policy(public_key))


def device_certificate_builder(checked: CheckedCsr, ca: x509.Certificate, serial_number: int, now: dt.datetime,
                               validity: dt.timedelta, backdate: dt.timedelta, crl_url: str | None = None,
                               ca_issuers_url: str | None = None) -> x509.CertificateBuilder:
    """The leaf profile: CN only, clientAuth, digitalSignature, CA:false, SKI/AKI, validity within the CA's; and
    where a relying party finds the CA's CRL and the CA certificate (shared/crl.py), when given."""
    not_before = max(now - backdate, ca.not_valid_before_utc)
    not_after = min(now + validity, ca.not_valid_after_utc)
    if not_after <= now:
        raise OnboardingError("configuration_error", "the issuing CA certificate has expired")
    public_key = checked.csr.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, checked.identity.device_id)]))
        .issuer_name(ca.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial_number)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(authority_key_identifier(ca), critical=False)
    )
    if crl_url:
        # RFC 5280 4.2.1.13: SHOULD be non-critical; an HTTP URI names a single DER CRL. One full CRL per CA, so
        # no reasons and no cRLIssuer: the CRL's issuer is the certificate's issuer.
        point = x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None,
                                       reasons=None, crl_issuer=None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    if ca_issuers_url:
        # RFC 5280 4.2.2.1: MUST be non-critical; id-ad-caIssuers over HTTP names the DER certificate of the issuer,
        # so a relying party holding only the root can build the chain a device did not send.
        access = x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                        x509.UniformResourceIdentifier(ca_issuers_url))
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    return builder


def random_serial_number() -> int:
    """A positive 159-bit random serial (RFC 5280: at most 20 octets; CA/B Forum: >= 64 bits of entropy)."""
    return x509.random_serial_number()


JSON_OVERHEAD = 1024  # what wrapping a CSR in {"csr": ...} may add to the body


def csr_from_body(body: bytes, max_bytes: int) -> str | bytes:
    """The CSR of a sign request: the raw body (PEM or DER), or the `csr` member of a JSON object."""
    if len(body) > max_bytes + JSON_OVERHEAD:
        raise OnboardingError("request_too_large", f"{len(body)} bytes (at most {max_bytes})")
    if body.lstrip()[:1] == b"{":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise OnboardingError("invalid_request", "the body is not JSON") from None
        csr = data.get("csr") if isinstance(data, dict) else None
        if not isinstance(csr, str):
            raise OnboardingError("invalid_request", 'expected {"csr": "-----BEGIN CERTIFICATE REQUEST-----..."}')
        return csr
    return body
