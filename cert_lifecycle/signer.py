"""Certificates and CRLs signed by a CA whose private key never leaves Key Vault.

`cryptography` builds the to-be-signed structure; Key Vault's `sign` operation signs its digest; the
signature is spliced into the DER and the product is verified against the CA's public key before it is
returned. The throwaway key used to let `cryptography` build the structure only contributes the signature
algorithm identifier, which depends on the key type and the hash, not on the curve or the modulus: a P-256 key
with the CA's hash names ecdsa-with-SHA384 as a P-384 key would, at a fifth of the signing cost. Its signature
is discarded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from shared.crl import key_identifier


class SigningError(Exception):
    """Key Vault produced no valid signature; nothing is returned or stored."""


@dataclass(frozen=True)
class SigningScheme:
    algorithm: str  # Key Vault algorithm name: ES256, ES384, ES512, RS256
    hash: hashes.HashAlgorithm


def signing_scheme(ca_public_key) -> SigningScheme:
    if isinstance(ca_public_key, ec.EllipticCurvePublicKey):
        bits = ca_public_key.curve.key_size
        if bits == 256:
            return SigningScheme("ES256", hashes.SHA256())
        if bits == 384:
            return SigningScheme("ES384", hashes.SHA384())
        if bits == 521:
            return SigningScheme("ES512", hashes.SHA512())
    if isinstance(ca_public_key, rsa.RSAPublicKey):
        return SigningScheme("RS256", hashes.SHA256())
    raise SigningError(f"unsupported CA key type {type(ca_public_key).__name__}")


@cache
def _throwaway_key(kind: str, bits: int):
    if kind == "ec":
        curve = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}[bits]
        return ec.generate_private_key(curve)
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _placeholder_key(ca_public_key):
    if isinstance(ca_public_key, ec.EllipticCurvePublicKey):
        return _throwaway_key("ec", 256)
    return _throwaway_key("rsa", 2048)


def _read_header(der: bytes, offset: int) -> tuple[int, int]:
    """(offset of content, content length) of the DER element at offset."""
    length = der[offset + 1]
    if length < 0x80:
        return offset + 2, length
    count = length & 0x7F
    return offset + 2 + count, int.from_bytes(der[offset + 2:offset + 2 + count], "big")


def _encode(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content


def splice_signature(signed_der: bytes, tbs: bytes, signature: bytes) -> bytes:
    """Replace the signature of a DER certificate/CRL (SEQUENCE {tbs, algorithm, BIT STRING})."""
    body, _ = _read_header(signed_der, 0)
    if signed_der[body:body + len(tbs)] != tbs:
        raise SigningError("unexpected DER layout")
    alg_start = body + len(tbs)
    alg_content, alg_len = _read_header(signed_der, alg_start)
    algorithm = signed_der[alg_start:alg_content + alg_len]
    return _encode(0x30, tbs + algorithm + _encode(0x03, b"\x00" + signature))


def authority_key_identifier(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI that names `ca` in what it signs (certificates and CRLs): from its SKI, else its public key. The
    webhook matches a device certificate to the CA version by it (shared.crl.key_identifier, one definition)."""
    return x509.AuthorityKeyIdentifier(key_identifier(ca), None, None)


class KeyVaultSigner:
    """Signs as one CA. sign_digest(algorithm, digest) -> signature bytes is Key Vault's `sign` operation."""

    def __init__(self, ca_certificate: x509.Certificate, sign_digest: Callable[[str, bytes], bytes]):
        self.ca_certificate = ca_certificate
        self._public_key = ca_certificate.public_key()
        self._scheme = signing_scheme(self._public_key)
        self._sign_digest = sign_digest

    def _signature(self, tbs: bytes) -> bytes:
        digest = hashes.Hash(self._scheme.hash)
        digest.update(tbs)
        raw = self._sign_digest(self._scheme.algorithm, digest.finalize())
        if isinstance(self._public_key, ec.EllipticCurvePublicKey):
            # Key Vault returns ECDSA signatures as r||s; X.509 wants DER SEQUENCE {r, s}.
            half = len(raw) // 2
            return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        return raw

    def _verify(self, signature: bytes, tbs: bytes) -> None:
        try:
            if isinstance(self._public_key, ec.EllipticCurvePublicKey):
                self._public_key.verify(signature, tbs, ec.ECDSA(self._scheme.hash))
            else:
                self._public_key.verify(signature, tbs, padding.PKCS1v15(), self._scheme.hash)
        except InvalidSignature:
            raise SigningError("Key Vault's signature does not verify with the CA certificate") from None

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        draft = builder.sign(_placeholder_key(self._public_key), self._scheme.hash)
        tbs = draft.tbs_certificate_bytes
        signature = self._signature(tbs)
        self._verify(signature, tbs)
        certificate = x509.load_der_x509_certificate(
            splice_signature(draft.public_bytes(Encoding.DER), tbs, signature))
        # The signature over tbs verified above; what is returned must carry exactly those bytes, that
        # signature, the CA's algorithm and its issuer name (cheaper than a second signature check, as strict).
        if (certificate.tbs_certificate_bytes != tbs or certificate.signature != signature
                or certificate.signature_algorithm_oid != draft.signature_algorithm_oid
                or certificate.issuer != self.ca_certificate.subject):
            raise SigningError("assembled certificate does not carry the verified signature")
        return certificate

    def sign_crl(self, builder: x509.CertificateRevocationListBuilder) -> x509.CertificateRevocationList:
        draft = builder.sign(_placeholder_key(self._public_key), self._scheme.hash)
        tbs = draft.tbs_certlist_bytes
        signature = self._signature(tbs)
        self._verify(signature, tbs)
        crl = x509.load_der_x509_crl(splice_signature(draft.public_bytes(Encoding.DER), tbs, signature))
        if not crl.is_signature_valid(self._public_key):
            raise SigningError("assembled CRL does not verify")
        return crl


def key_vault_sign_digest(crypto_client) -> Callable[[str, bytes], bytes]:
    """Adapter: azure-keyvault-keys CryptographyClient -> sign_digest(algorithm, digest)."""

    def sign(algorithm: str, digest: bytes) -> bytes:
        from azure.keyvault.keys.crypto import SignatureAlgorithm

        return crypto_client.sign(SignatureAlgorithm(algorithm), digest).signature

    return sign
