"""Test PKI: a regional CA and device certificates made in memory (nothing secret is committed)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@dataclass
class TestCa:
    name: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def issue(self, cn: str, serial: int | None = None, days: int = 730,
              not_before: dt.datetime = NOW - dt.timedelta(days=1)) -> x509.Certificate:
        device_key = ec.generate_private_key(ec.SECP256R1())
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.certificate.subject)
            .public_key(device_key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def crl(self, revoked: list[int] = (), number: int = 1, this_update: dt.datetime = NOW - dt.timedelta(hours=1),
            next_update: dt.datetime = NOW + dt.timedelta(days=7), key=None) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(this_update).next_update(next_update)
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update).build())
        return builder.sign(key or self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def make_ca(name: str = "intermediate-ca-west", region: str = "west") -> TestCa:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"Test Intermediate CA {region}")])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30)).not_valid_after(NOW + dt.timedelta(days=1800))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return TestCa(name, cert, key)


def der_b64(cert: x509.Certificate) -> str:
    import base64

    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def client_certificate(cn: str, issuer: x509.Certificate, issuer_key, now: dt.datetime,
                       days: int = 30) -> x509.Certificate:
    """A device certificate (clientAuth, CN = the registration ID) issued by issuer, valid from an hour before now."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
            .sign(issuer_key, hashes.SHA256()))

