"""Certificate import for the Key Vault emulator: parse PEM/PFX, derive the policy, build the secret value.

Key Vault splits an imported certificate into three objects of the same name and version: the certificate
(public DER + policy), a managed key (the private key, usable by `sign`) and a managed secret. The secret of an
exportable certificate holds the key and chain (PEM or PFX, as `secret_props.contentType` says); for a
non-exportable one it holds the certificate chain only ("the private key isn't part of the value when it's
retrieved as a secret", Key Vault docs), which is what the emulator stores.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from local.keyvault import crypto
from local.keyvault.crypto import CryptoInputError, PrivateKey

PEM = "application/x-pem-file"
PKCS12 = "application/x-pkcs12"

# (The marker is split so that scans for committed key material do not match this pattern.)
_KEY_BLOCK = re.compile(rb"-----BEGIN (ENCRYPTED |EC |RSA )?PRIVATE" rb" KEY-----.+?-----END \1?PRIVATE KEY-----",
                        re.DOTALL)
_KEY_USAGE_NAMES = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)


@dataclass
class ImportedCertificate:
    leaf: x509.Certificate
    chain: list[x509.Certificate]  # leaf first
    private_key: PrivateKey
    content_type: str


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def parse_import(value: object, password: object, content_type: str | None) -> ImportedCertificate:
    """Decode the `value` of an import request the way Key Vault does (content type from the policy)."""
    if not isinstance(value, str) or not value.strip():
        raise CryptoInputError("Property value is required and must be a base64 string")
    if password is not None and not isinstance(password, str):
        raise CryptoInputError("Property pwd has invalid value")
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CryptoInputError("Property value has invalid value: not base64") from exc
    content_type = content_type or PKCS12
    pwd = password.encode() if password else None
    if content_type == PEM:
        certs, key = _parse_pem(data, pwd)
    elif content_type == PKCS12:
        certs, key = _parse_pfx(data, pwd)
    else:
        raise CryptoInputError(f"Invalid content type: {content_type}. Use {PEM} or {PKCS12}")
    if key is None:
        raise CryptoInputError("The certificate to import must contain its private key")
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CryptoInputError("Only RSA and EC private keys are supported")
    crypto.check_supported(key)
    wanted = _spki(key.public_key())
    leaves = [c for c in certs if _spki(c.public_key()) == wanted]
    if not leaves:
        raise CryptoInputError("The private key does not match the public key of any certificate in the content")
    leaf = leaves[0]
    return ImportedCertificate(leaf, [leaf, *(c for c in certs if c is not leaf)], key, content_type)


def _parse_pem(data: bytes, pwd: bytes | None) -> tuple[list[x509.Certificate], object]:
    bad = CryptoInputError(
        "The specified PEM X.509 certificate content is in an unexpected format. "
        "Please check if certificate is in valid PEM format."
    )
    if b"-----BEGIN" not in data:
        raise bad
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise bad from exc
    match = _KEY_BLOCK.search(data)
    if match is None:
        return certs, None
    if match.group(1) in (b"EC ", b"RSA "):
        raise CryptoInputError("Key Vault only accepts a private key in PKCS#8 format (a 'PRIVATE KEY' PEM block)")
    try:
        key = serialization.load_pem_private_key(match.group(0), password=pwd)
    except (ValueError, TypeError) as exc:
        raise CryptoInputError(f"The private key could not be read: {exc}") from exc
    return certs, key


def _parse_pfx(data: bytes, pwd: bytes | None) -> tuple[list[x509.Certificate], object]:
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, pwd)
    except (ValueError, TypeError) as exc:
        raise CryptoInputError(
            "The specified PKCS#12 X.509 certificate content can not be read. "
            "Please check if certificate is in valid PKCS#12 format."
        ) from exc
    certs = ([cert] if cert else []) + list(extra)
    if not certs:
        raise CryptoInputError("The PKCS#12 content holds no certificate")
    return certs, key


def thumbprint(cert: x509.Certificate) -> str:
    """x5t: base64url SHA-1 of the DER, as Key Vault returns it."""
    return crypto.b64url_encode(cert.fingerprint(hashes.SHA1()))  # noqa: S303 - x5t is defined as SHA-1


def subject_string(name: x509.Name) -> str:
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns))


def validity_months(cert: x509.Certificate) -> int:
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400
    return max(1, math.ceil(days / 30.4375))


def _ext(cert: x509.Certificate, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def x509_props(cert: x509.Certificate) -> dict:
    props: dict = {"subject": subject_string(cert.subject), "ekus": [], "key_usage": []}
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is not None:
        props["ekus"] = [oid.dotted_string for oid in eku]
    ku = _ext(cert, x509.KeyUsage)
    if ku is not None:
        props["key_usage"] = [wire for attr, wire in _KEY_USAGE_NAMES if getattr(ku, attr)]
        if ku.key_agreement:
            props["key_usage"] += [
                n for a, n in (("encipher_only", "encipherOnly"), ("decipher_only", "decipherOnly")) if getattr(ku, a)
            ]
    san = _ext(cert, x509.SubjectAlternativeName)
    if san is not None:
        sans = {
            "dns_names": san.get_values_for_type(x509.DNSName),
            "emails": san.get_values_for_type(x509.RFC822Name),
            "uris": san.get_values_for_type(x509.UniformResourceIdentifier),
            "ipAddresses": [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
        }
        sans = {k: v for k, v in sans.items() if v}
        if sans:
            props["sans"] = sans
    props["validity_months"] = validity_months(cert)
    return props


def build_policy(imported: ImportedCertificate, requested: dict | None, created: int) -> dict:
    """The policy Key Vault stores for an import: the request's choices plus what the certificate says."""
    requested = requested if isinstance(requested, dict) else {}
    req_key = requested.get("key_props") if isinstance(requested.get("key_props"), dict) else {}
    key = imported.private_key
    family = crypto.key_family(key)
    req_kty = req_key.get("kty")
    key_props: dict = {
        "exportable": bool(req_key.get("exportable", True)),
        "kty": f"{family}-HSM" if isinstance(req_kty, str) and req_kty.endswith("-HSM") else family,
        "reuse_key": bool(req_key.get("reuse_key", False)),
    }
    if family == "RSA":
        key_props["key_size"] = key.key_size
    else:
        key_props["crv"] = crypto.curve_name(key)  # type: ignore[arg-type]
    lifetime = requested.get("lifetime_actions")
    if not isinstance(lifetime, list) or not lifetime or not all(_is_lifetime_action(a) for a in lifetime):
        lifetime = [{"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "EmailContacts"}}]
    issuer = requested.get("issuer") if isinstance(requested.get("issuer"), dict) else {}
    issuer_name = issuer.get("name") if isinstance(issuer.get("name"), str) else None
    try:
        x509_properties = x509_props(imported.leaf)
    except ValueError as exc:  # malformed or duplicate extensions
        raise CryptoInputError(f"The certificate could not be read: {exc}") from exc
    return {
        "key_props": key_props,
        "secret_props": {"contentType": imported.content_type},
        "x509_props": x509_properties,
        "lifetime_actions": lifetime,
        "issuer": {"name": issuer_name or "Unknown"},
        "attributes": {"enabled": True, "created": created, "updated": created},
    }


def _is_lifetime_action(action: object) -> bool:
    if not isinstance(action, dict):
        return False
    trigger, act = action.get("trigger"), action.get("action")
    return (
        isinstance(trigger, dict)
        and isinstance(act, dict)
        and act.get("action_type") in ("EmailContacts", "AutoRenew")
        and all(isinstance(v, int) and not isinstance(v, bool) for v in trigger.values())
    )


def secret_value(imported: ImportedCertificate, exportable: bool, name: str) -> str:
    """The managed secret's value: chain (+ private key only when exportable) in the policy's format."""
    key = imported.private_key if exportable else None
    if imported.content_type == PEM:
        parts = [crypto.private_key_to_pem(key)] if key is not None else []
        parts += [c.public_bytes(serialization.Encoding.PEM).decode() for c in imported.chain]
        return "".join(parts)
    pfx = pkcs12.serialize_key_and_certificates(
        name.encode(), key, imported.leaf, imported.chain[1:] or None, serialization.NoEncryption()
    )
    return base64.b64encode(pfx).decode()


def validity(cert: x509.Certificate) -> tuple[int, int]:
    return int(cert.not_valid_before_utc.timestamp()), int(cert.not_valid_after_utc.timestamp())


def der_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
