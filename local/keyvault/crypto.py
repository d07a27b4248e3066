"""Key material and signing for the Key Vault emulator, in Key Vault's wire formats.

Key Vault signs a digest the client computed (never the message), returns ECDSA signatures as raw r||s
(JWS style, not DER) and exchanges keys as JWKs whose byte fields are unpadded base64url. The product's CA code
depends on exactly these formats, so the emulator reproduces them; the helpers here are pure functions.
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

# JWK curve name -> (cryptography curve class, coordinate size in bytes)
CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
    "P-256K": (ec.SECP256K1, 32),
}
_CURVE_BY_NAME = {cls.name: crv for crv, (cls, _) in CURVES.items()}

RSA_KEY_SIZES = (2048, 3072, 4096)
RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
EC_OPS = ["sign", "verify"]
KNOWN_OPS = {*RSA_OPS, "import", "export"}
PRIVATE_JWK_FIELDS = ("d", "p", "q", "dp", "dq", "qi", "k", "key_hsm")


@dataclass(frozen=True)
class Algorithm:
    family: str  # "EC" or "RSA"
    hash: type[hashes.HashAlgorithm]
    digest_len: int
    curve: str | None = None  # ECDSA algorithms are bound to one curve
    pss: bool = False


ALGORITHMS: dict[str, Algorithm] = {
    "ES256": Algorithm("EC", hashes.SHA256, 32, "P-256"),
    "ES384": Algorithm("EC", hashes.SHA384, 48, "P-384"),
    "ES512": Algorithm("EC", hashes.SHA512, 64, "P-521"),
    "ES256K": Algorithm("EC", hashes.SHA256, 32, "P-256K"),
    "RS256": Algorithm("RSA", hashes.SHA256, 32),
    "RS384": Algorithm("RSA", hashes.SHA384, 48),
    "RS512": Algorithm("RSA", hashes.SHA512, 64),
    "PS256": Algorithm("RSA", hashes.SHA256, 32, pss=True),
    "PS384": Algorithm("RSA", hashes.SHA384, 48, pss=True),
    "PS512": Algorithm("RSA", hashes.SHA512, 64, pss=True),
}


class CryptoInputError(ValueError):
    """Input Key Vault would refuse with 400 BadParameter; the message is the one returned to the client."""


# --- base64url ---------------------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str, field: str = "value") -> bytes:
    """Decode base64url with or without padding; anything else is a BadParameter, never a crash."""
    if not isinstance(text, str):
        raise CryptoInputError(f"Property {field} has invalid value")
    stripped = text.strip().rstrip("=")
    if any(c not in _B64URL_ALPHABET for c in stripped):
        raise CryptoInputError(f"Property {field} has invalid value: not base64url")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise CryptoInputError(f"Property {field} has invalid value: not base64url") from exc


_B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _int_to_b64url(value: int, length: int | None = None) -> str:
    length = length or max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(length, "big"))


def _b64url_to_int(jwk: dict, field: str) -> int:
    raw = jwk.get(field)
    if raw is None:
        raise CryptoInputError(f"JSON Web Key: property {field} is required")
    data = b64url_decode(raw, field)
    if not data:
        raise CryptoInputError(f"JSON Web Key: property {field} is empty")
    return int.from_bytes(data, "big")


# --- signature formats -------------------------------------------------------------------------------------


def der_to_raw(der: bytes, coordinate_size: int) -> bytes:
    """ECDSA DER (what OpenSSL produces) -> r||s, each left-padded to the curve size (what Key Vault returns)."""
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(coordinate_size, "big") + s.to_bytes(coordinate_size, "big")


def raw_to_der(raw: bytes) -> bytes:
    """r||s -> DER, for verifiers (X.509, cryptography) that expect DER."""
    if not raw or len(raw) % 2:
        raise CryptoInputError("Invalid ECDSA signature length")
    half = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


# --- keys --------------------------------------------------------------------------------------------------


def curve_name(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    try:
        return _CURVE_BY_NAME[key.curve.name]
    except KeyError:
        raise CryptoInputError(f"Unsupported curve: {key.curve.name}") from None


def key_family(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "EC"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RSA"
    raise CryptoInputError("Only RSA and EC keys are supported")


def check_supported(key: PrivateKey) -> None:
    """Refuse key kinds Key Vault does not hold (small RSA moduli, unknown curves, Ed25519...)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve_name(key)
    elif isinstance(key, rsa.RSAPrivateKey):
        if key.key_size not in RSA_KEY_SIZES:
            raise CryptoInputError(
                f"RSA key size {key.key_size} is not supported. Supported sizes are 2048, 3072 and 4096"
            )
    else:
        raise CryptoInputError("Only RSA and EC keys are supported")


def generate_key(kty: str, key_size: int | None, crv: str | None, public_exponent: int | None) -> PrivateKey:
    family = kty.removesuffix("-HSM")
    if family == "EC":
        crv = crv or "P-256"
        if not isinstance(crv, str) or crv not in CURVES:
            raise CryptoInputError(f"Invalid curve name: {crv}")
        return ec.generate_private_key(CURVES[crv][0]())
    if family == "RSA":
        size = key_size or 2048
        if size not in RSA_KEY_SIZES:
            raise CryptoInputError(f"Invalid key size: {size}. Supported sizes are 2048, 3072 and 4096")
        exponent = public_exponent or 65537
        if exponent not in (3, 65537):
            raise CryptoInputError(f"Invalid public exponent: {exponent}")
        return rsa.generate_private_key(exponent, size)
    raise CryptoInputError(f"Invalid kty value: {kty}")


def default_ops(family: str) -> list[str]:
    return list(EC_OPS if family == "EC" else RSA_OPS)


def public_jwk(key: PrivateKey | PublicKey) -> dict:
    """The public half as a Key Vault JWK (no kid/kty suffix/key_ops: the store adds those)."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else key
    if isinstance(pub, ec.EllipticCurvePublicKey):
        crv = curve_name(pub)
        size = CURVES[crv][1]
        numbers = pub.public_numbers()
        return {"kty": "EC", "crv": crv, "x": _int_to_b64url(numbers.x, size), "y": _int_to_b64url(numbers.y, size)}
    numbers = pub.public_numbers()
    return {"kty": "RSA", "n": _int_to_b64url(numbers.n), "e": _int_to_b64url(numbers.e)}


def private_key_from_jwk(jwk: dict) -> PrivateKey:
    """Build a private key from an imported JWK; the public part must match the private part."""
    if not isinstance(jwk, dict):
        raise CryptoInputError("Property key has invalid value")
    kty = jwk.get("kty")
    family = kty.removesuffix("-HSM") if isinstance(kty, str) else None
    if family == "EC":
        crv = jwk.get("crv")
        if not isinstance(crv, str) or crv not in CURVES:
            raise CryptoInputError(f"Invalid curve name: {crv}")
        if jwk.get("d") is None:
            raise CryptoInputError("The imported key must contain its private part (d)")
        d = _b64url_to_int(jwk, "d")
        try:
            key = ec.derive_private_key(d, CURVES[crv][0]())
        except ValueError as exc:
            raise CryptoInputError(f"JSON Web Key: invalid private key: {exc}") from exc
        if jwk.get("x") is not None or jwk.get("y") is not None:
            numbers = key.public_key().public_numbers()
            if (_b64url_to_int(jwk, "x"), _b64url_to_int(jwk, "y")) != (numbers.x, numbers.y):
                raise CryptoInputError("JSON Web Key: x and y do not match the private key d")
        return key
    if family == "RSA":
        n, e = _b64url_to_int(jwk, "n"), _b64url_to_int(jwk, "e")
        # Bound the sizes before any arithmetic: a huge modulus or exponent would stall the server.
        if n.bit_length() not in RSA_KEY_SIZES:
            raise CryptoInputError(
                f"RSA key size {n.bit_length()} is not supported. Supported sizes are 2048, 3072 and 4096"
            )
        if not 3 <= e < 2**64:
            raise CryptoInputError("JSON Web Key: property e has invalid value")
        if jwk.get("d") is None:
            raise CryptoInputError("The imported key must contain its private part (d)")
        d = _b64url_to_int(jwk, "d")
        if not 1 < d < n:
            raise CryptoInputError("JSON Web Key: property d has invalid value")
        try:
            if all(jwk.get(f) is not None for f in ("p", "q")):
                p, q = _b64url_to_int(jwk, "p"), _b64url_to_int(jwk, "q")
            else:
                p, q = rsa.rsa_recover_prime_factors(n, e, d)
            dmp1 = _b64url_to_int(jwk, "dp") if jwk.get("dp") is not None else rsa.rsa_crt_dmp1(d, p)
            dmq1 = _b64url_to_int(jwk, "dq") if jwk.get("dq") is not None else rsa.rsa_crt_dmq1(d, q)
            iqmp = _b64url_to_int(jwk, "qi") if jwk.get("qi") is not None else rsa.rsa_crt_iqmp(p, q)
            key = rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n)).private_key()
        except (ValueError, TypeError) as exc:
            raise CryptoInputError(f"JSON Web Key: invalid RSA key: {exc}") from exc
        check_supported(key)
        return key
    raise CryptoInputError(f"Invalid kty value: {kty}")


def private_key_to_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@functools.lru_cache(maxsize=256)
def private_key_from_pem(pem: str) -> PrivateKey:
    """Parsed once per key version (a key version's material never changes; parsing is most of a sign's cost
    here). Key objects are immutable and safe to share between threads."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CryptoInputError("Only RSA and EC keys are supported")
    return key


# --- sign / verify -----------------------------------------------------------------------------------------


def check_algorithm(key: PrivateKey | PublicKey, alg: object, digest: bytes, key_id: str) -> Algorithm:
    """Validate alg against the key and the digest length exactly as Key Vault's sign/verify do."""
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise CryptoInputError(f"Property alg has invalid value: {alg}")
    spec = ALGORITHMS[alg]
    family = key_family(key)
    if spec.family != family:
        raise CryptoInputError(
            f"Key and signing algorithm are incompatible. Key {key_id} is an {family} key, "
            f"and algorithm '{alg}' requires an {spec.family} key."
        )
    if family == "EC":
        crv = curve_name(key)  # type: ignore[arg-type]
        if crv != spec.curve:
            raise CryptoInputError(
                f"Key and signing algorithm are incompatible. Key {key_id} uses curve '{crv}', "
                f"and algorithm '{alg}' can only be used with curve '{spec.curve}'."
            )
    if len(digest) != spec.digest_len:
        raise CryptoInputError(
            f"Invalid length of 'value': {len(digest)} bytes. {alg} requires {spec.digest_len} bytes, "
            "encoded with base64url."
        )
    return spec


def _rsa_padding(spec: Algorithm) -> padding.AsymmetricPadding:
    if spec.pss:
        # Key Vault's PS* use MGF1 with the same hash and a salt as long as the digest (RFC 7518 3.5).
        return padding.PSS(mgf=padding.MGF1(spec.hash()), salt_length=spec.digest_len)
    return padding.PKCS1v15()


def sign_digest(key: PrivateKey, alg: str, digest: bytes, key_id: str = "") -> bytes:
    """Sign a precomputed digest; ECDSA comes back as raw r||s like Key Vault's `sign`."""
    spec = check_algorithm(key, alg, digest, key_id)
    prehashed = utils.Prehashed(spec.hash())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        der = key.sign(digest, ec.ECDSA(prehashed))
        return der_to_raw(der, CURVES[curve_name(key)][1])
    return key.sign(digest, _rsa_padding(spec), prehashed)


def verify_digest(key: PrivateKey | PublicKey, alg: str, digest: bytes, signature: bytes, key_id: str = "") -> bool:
    spec = check_algorithm(key, alg, digest, key_id)
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else key
    prehashed = utils.Prehashed(spec.hash())
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            size = CURVES[curve_name(pub)][1]
            if len(signature) != 2 * size:
                return False
            pub.verify(raw_to_der(signature), digest, ec.ECDSA(prehashed))
        else:
            pub.verify(signature, digest, _rsa_padding(spec), prehashed)
    except InvalidSignature:
        return False
    return True
