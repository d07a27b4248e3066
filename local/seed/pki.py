"""The local PKI: an offline root CA (files under .local/pki) and one intermediate CA per region in Key Vault.

The intermediate's key exists in this process only between its creation and its import into Key Vault as a
non-exportable key (a key ceremony in miniature); from then on every signature comes from Key Vault. Each CA's
CRL is published by the product's own publisher (cert_lifecycle/crl.py: SQL's revocations, signed through Key
Vault) to the Azurite container `crl`, which allows anonymous blob reads as a public CRL distribution point does,
so the webhook has a CRL to verify from the first boot and a certificate's CDP URL answers a plain GET. A local
state made by an earlier release (CRLs in Key Vault secrets) gets its CRLs in Blob on the next start.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT_VALIDITY = dt.timedelta(days=20 * 365)
INTERMEDIATE_VALIDITY = dt.timedelta(days=5 * 365)
# The local PKI is made as if it had been set up years ago, as the reference deployment's was: the root three
# years back, the regional CAs two years into their five. Device certificates cannot start before their CA,
# so only then can the demo and tests install sensors whose 2-year certificates are about to expire.
ROOT_AGE = dt.timedelta(days=3 * 365)
INTERMEDIATE_AGE = dt.timedelta(days=2 * 365)


@dataclass(frozen=True)
class RootCa:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sensor Onboarding (local)"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def ensure_root_ca(pki_dir: Path) -> RootCa:
    """Load the offline root from pki_dir, creating it on first use."""
    cert_path, key_path = pki_dir / "root-ca.pem", pki_dir / "root-ca-key.pem"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        return RootCa(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)  # type: ignore[arg-type]
    pki_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("Sensor Onboarding Local Root CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ROOT_AGE).not_valid_after(now - ROOT_AGE + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return RootCa(cert, key)


def make_intermediate(root: RootCa, ca_name: str, region: str
                      ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"Sensor Onboarding Intermediate CA {region}"))
        .issuer_name(root.certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - INTERMEDIATE_AGE).not_valid_after(now - INTERMEDIATE_AGE + INTERMEDIATE_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), critical=False)
        .sign(root.key, hashes.SHA384())
    )
    return cert, key


def import_pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]) -> bytes:
    """PEM bundle (key + certificate + chain) in the form Key Vault's certificate import accepts."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    for c in [cert, *chain]:
        pem += c.public_bytes(serialization.Encoding.PEM)
    return pem


def ensure_intermediate_cas(services, root: RootCa, ca_names: dict[str, str]) -> list[str]:
    """Create each regional CA in Key Vault (certificate + non-exportable key) if absent, then publish every CA's
    CRL and certificate to the CRL container. Returns the names created.

    Uses the product's Key Vault clients and CRL publisher, so the seed exercises the same SDKs and code paths.
    """
    from azure.core.exceptions import ResourceNotFoundError
    from azure.keyvault.certificates import CertificateContentType, CertificatePolicy, KeyCurveName, KeyType

    created = []
    for region, ca_name in ca_names.items():
        try:
            services.certificates.get_certificate(ca_name)
            continue
        except ResourceNotFoundError:
            pass
        cert, key = make_intermediate(root, ca_name, region)
        policy = CertificatePolicy(
            issuer_name="Unknown", subject=cert.subject.rfc4514_string(), exportable=False,
            key_type=KeyType.ec, key_curve_name=KeyCurveName.p_384, content_type=CertificateContentType.pem,
        )
        services.certificates.import_certificate(
            ca_name, import_pem(cert, key, [root.certificate]), policy=policy,
            tags={"region": region, "role": "intermediate-ca"},
        )
        del key
        created.append(ca_name)
    ensure_crl_container(services)
    publish_crls(services)
    return created


def ensure_crl_container(services) -> None:
    """The CRL container, with anonymous read access to its blobs (not to its listing): relying parties fetch a
    CRL Distribution Points URL without credentials. In Azure, infra creates it (see README, "CRLs")."""
    from azure.core.exceptions import ResourceExistsError

    container = services.blob_service.get_container_client(services.settings.crl_container)
    try:
        container.create_container(public_access="blob")
    except ResourceExistsError:
        if container.get_container_access_policy().get("public_access") != "blob":
            container.set_container_access_policy(signed_identifiers={}, public_access="blob")


def publish_crls(services) -> list:
    """Bring every CA's CRL in Blob up to date with SQL, as the refresh timer does (a no-op when it is)."""
    from cert_lifecycle.wiring import Lifecycle

    lifecycle = Lifecycle(services)
    return [lifecycle.publisher.publish(authority, actor="seed") for authority in lifecycle.cas.all()]
