"""The Key Vault signer, with a local key standing in for Key Vault's `sign` (raw r||s, as Key Vault answers)."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.x509.oid import NameOID

from cert_lifecycle.signer import KeyVaultSigner, SigningError

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
HASHES = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "RS256": hashes.SHA256()}


def ca(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "KV CA")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))


def vault_sign(key, calls):
    """What Key Vault's sign does: sign a pre-computed digest; ECDSA answers r||s."""
    def sign(algorithm, digest):
        calls.append(algorithm)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(HASHES[algorithm]))))
            size = (key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return key.sign(digest, PKCS1v15(), Prehashed(HASHES[algorithm]))
    return sign


def leaf_builder(issuer: x509.Certificate):
    device_key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sensor-temp-FAC03-SN1")]))
            .issuer_name(issuer.subject).public_key(device_key.public_key()).serial_number(12345)
            .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=730)))


@pytest.mark.parametrize("key,algorithm", [
    (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    (ec.generate_private_key(ec.SECP384R1()), "ES384"),
    (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
])
def test_certificate_and_crl_signed_through_the_vault_verify(key, algorithm):
    ca_cert, calls = ca(key), []
    signer = KeyVaultSigner(ca_cert, vault_sign(key, calls))
    cert = signer.sign_certificate(leaf_builder(ca_cert))
    cert.verify_directly_issued_by(ca_cert)
    assert cert.serial_number == 12345
    crl = signer.sign_crl(
        x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(NOW)
        .next_update(NOW + dt.timedelta(days=7))
        .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(12345).revocation_date(NOW).build()))
    assert crl.is_signature_valid(ca_cert.public_key())
    assert crl.get_revoked_certificate_by_serial_number(12345) is not None
    assert calls == [algorithm, algorithm]


def test_a_wrong_signature_from_the_vault_is_never_returned():
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = ca(key)
    signer = KeyVaultSigner(ca_cert, vault_sign(other, []))
    with pytest.raises(SigningError):
        signer.sign_certificate(leaf_builder(ca_cert))
