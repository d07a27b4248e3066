"""Key Vault wire formats of the emulator's signing helpers: raw r||s, base64url JWKs, digest-length rules."""

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from local.keyvault import crypto
from local.keyvault.crypto import CryptoInputError


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(65537, 2048)


def test_raw_signature_pads_r_and_s_to_the_curve_size():
    der = utils.encode_dss_signature(1, 2**255)
    raw = crypto.der_to_raw(der, 32)
    assert len(raw) == 64 and raw[:32] == b"\x00" * 31 + b"\x01"
    assert crypto.raw_to_der(raw) == der
    with pytest.raises(CryptoInputError):
        crypto.raw_to_der(b"\x01" * 63)


@pytest.mark.parametrize(
    ("curve", "alg", "hash_cls", "size"),
    [
        (ec.SECP256R1(), "ES256", hashes.SHA256, 32),
        (ec.SECP384R1(), "ES384", hashes.SHA384, 48),
        (ec.SECP521R1(), "ES512", hashes.SHA512, 66),
        (ec.SECP256K1(), "ES256K", hashes.SHA256, 32),
    ],
)
def test_ecdsa_signs_the_digest_as_raw_r_s(curve, alg, hash_cls, size):
    key = ec.generate_private_key(curve)
    h = hashes.Hash(hash_cls())
    h.update(b"message")
    digest = h.finalize()
    signature = crypto.sign_digest(key, alg, digest)
    assert len(signature) == 2 * size
    key.public_key().verify(crypto.raw_to_der(signature), digest, ec.ECDSA(utils.Prehashed(hash_cls())))
    assert crypto.verify_digest(key.public_key(), alg, digest, signature)
    assert not crypto.verify_digest(key.public_key(), alg, digest, bytes([signature[0] ^ 1]) + signature[1:])
    assert not crypto.verify_digest(key.public_key(), alg, digest, signature[:-1])


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_signs_the_digest_with_the_jws_padding(rsa_key, alg):
    spec = crypto.ALGORITHMS[alg]
    digest = hashlib.new(spec.hash.name, b"message").digest()
    signature = crypto.sign_digest(rsa_key, alg, digest)
    pad = padding.PSS(mgf=padding.MGF1(spec.hash()), salt_length=spec.digest_len) if spec.pss else padding.PKCS1v15()
    rsa_key.public_key().verify(signature, digest, pad, utils.Prehashed(spec.hash()))
    assert crypto.verify_digest(rsa_key, alg, digest, signature)


def test_algorithm_checks_use_key_vault_messages(rsa_key):
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CryptoInputError, match=r"Invalid length of 'value': 31 bytes\. ES256 requires 32 bytes"):
        crypto.sign_digest(p256, "ES256", b"\x00" * 31, "kid")
    with pytest.raises(CryptoInputError, match="uses curve 'P-256', and algorithm 'ES384' can only be used with curve"):
        crypto.sign_digest(p256, "ES384", b"\x00" * 48, "kid")
    with pytest.raises(CryptoInputError, match="incompatible"):
        crypto.sign_digest(rsa_key, "ES256", b"\x00" * 32, "kid")
    for bad in ("HS256", "RSNULL", None, 5):
        with pytest.raises(CryptoInputError, match="alg"):
            crypto.sign_digest(p256, bad, b"\x00" * 32)  # type: ignore[arg-type]


def test_public_jwk_is_public_only_with_fixed_width_coordinates(rsa_key):
    key = ec.derive_private_key(1, ec.SECP384R1())
    jwk = crypto.public_jwk(key)
    assert set(jwk) == {"kty", "crv", "x", "y"} and jwk["crv"] == "P-384"
    assert len(crypto.b64url_decode(jwk["x"])) == 48
    assert set(crypto.public_jwk(rsa_key)) == {"kty", "n", "e"}
    assert crypto.public_jwk(rsa_key)["e"] == "AQAB"


def test_ec_jwk_import_round_trips_and_checks_the_public_part():
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.private_numbers()
    jwk = {**crypto.public_jwk(key), "d": crypto.b64url_encode(numbers.private_value.to_bytes(32, "big"))}
    assert crypto.private_key_from_jwk(jwk).private_numbers() == numbers
    other = crypto.public_jwk(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CryptoInputError, match="do not match"):
        crypto.private_key_from_jwk({**jwk, "x": other["x"], "y": other["y"]})
    with pytest.raises(CryptoInputError, match="private part"):
        crypto.private_key_from_jwk(crypto.public_jwk(key))
    with pytest.raises(CryptoInputError):
        crypto.private_key_from_jwk({**jwk, "d": crypto.b64url_encode(b"\x00")})
    with pytest.raises(CryptoInputError, match="curve"):
        crypto.private_key_from_jwk({**jwk, "crv": "P-192"})


def test_rsa_jwk_import_recovers_missing_primes(rsa_key):
    n = rsa_key.private_numbers()
    jwk = {
        "kty": "RSA-HSM",
        "n": crypto.b64url_encode(n.public_numbers.n.to_bytes(256, "big")),
        "e": "AQAB",
        "d": crypto.b64url_encode(n.d.to_bytes(256, "big")),
    }
    assert crypto.private_key_from_jwk(jwk).private_numbers().d == n.d
    with pytest.raises(CryptoInputError):
        crypto.private_key_from_jwk({**jwk, "d": crypto.b64url_encode(b"\x05")})
    small = rsa.generate_private_key(65537, 1024).private_numbers()  # noqa: S505 - must be refused
    with pytest.raises(CryptoInputError, match="not supported"):
        crypto.private_key_from_jwk(
            {
                "kty": "RSA",
                "n": crypto.b64url_encode(small.public_numbers.n.to_bytes(128, "big")),
                "e": "AQAB",
                "d": crypto.b64url_encode(small.d.to_bytes(128, "big")),
            }
        )
    with pytest.raises(CryptoInputError, match="kty"):
        crypto.private_key_from_jwk({"kty": "oct", "k": "AA"})


def test_base64url_accepts_padding_and_refuses_other_alphabets():
    assert crypto.b64url_decode("AQID") == b"\x01\x02\x03"
    assert crypto.b64url_decode("AQ==") == crypto.b64url_decode("AQ") == b"\x01"
    assert crypto.b64url_encode(b"\xfb\xff") == "-_8"
    for bad in ("+/8", "a b", "€", 12):
        with pytest.raises(CryptoInputError):
            crypto.b64url_decode(bad)  # type: ignore[arg-type]


def test_generate_key_refuses_what_key_vault_refuses():
    assert crypto.curve_name(crypto.generate_key("EC-HSM", None, None, None)) == "P-256"
    assert crypto.generate_key("RSA", 3072, None, None).key_size == 3072
    for args in (
        ("RSA", 1024, None, None),
        ("EC", None, "P-192", None),
        ("oct", None, None, None),
        ("RSA", 2048, None, 17),
    ):
        with pytest.raises(CryptoInputError):
            crypto.generate_key(*args)
