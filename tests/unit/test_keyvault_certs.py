"""Certificate import rules of the Key Vault emulator: PEM needs PKCS#8, the key picks the leaf, non-exportable
secrets hold only the chain, and the derived policy carries what the SDK reads back."""

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from local.keyvault import certs, crypto
from local.keyvault.crypto import CryptoInputError


def _cert(key, cn: str, days: int = 365) -> x509.Certificate:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Plant"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("ca.local")]), critical=False)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def ca():
    key = ec.generate_private_key(ec.SECP384R1())
    root_key = ec.generate_private_key(ec.SECP384R1())
    return key, _cert(key, "Intermediate"), _cert(root_key, "Root")


def _pem(*items) -> str:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
    return base64.b64encode(out).decode()


def test_pem_import_finds_the_leaf_by_its_key_wherever_it_is(ca):
    key, cert, root = ca
    imported = certs.parse_import(_pem(root, key, cert), None, certs.PEM)
    assert imported.leaf == cert and imported.chain == [cert, root]
    assert imported.private_key.private_numbers() == key.private_numbers()


def test_pem_import_refusals(ca):
    key, cert, root = ca
    sec1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    with pytest.raises(CryptoInputError, match="PKCS#8"):
        certs.parse_import(
            base64.b64encode(sec1 + cert.public_bytes(serialization.Encoding.PEM)).decode(), None, certs.PEM
        )
    with pytest.raises(CryptoInputError, match="private key"):
        certs.parse_import(_pem(cert), None, certs.PEM)
    with pytest.raises(CryptoInputError, match="does not match"):
        certs.parse_import(_pem(key, root), None, certs.PEM)
    with pytest.raises(CryptoInputError, match="PKCS#12"):  # PEM bytes under the default (PFX) content type
        certs.parse_import(_pem(key, cert), None, None)
    with pytest.raises(CryptoInputError, match="content type"):
        certs.parse_import(_pem(key, cert), None, "text/plain")
    with pytest.raises(CryptoInputError, match="base64"):
        certs.parse_import("***", None, certs.PEM)
    with pytest.raises(CryptoInputError, match="PEM"):
        certs.parse_import(base64.b64encode(b"garbage").decode(), None, certs.PEM)


def test_pfx_import_with_password(ca):
    key, cert, root = ca
    pfx = pkcs12.serialize_key_and_certificates(b"ca", key, cert, [root], serialization.BestAvailableEncryption(b"pw"))
    value = base64.b64encode(pfx).decode()
    imported = certs.parse_import(value, "pw", certs.PKCS12)
    assert imported.leaf == cert and imported.chain == [cert, root]
    with pytest.raises(CryptoInputError, match="PKCS#12"):
        certs.parse_import(value, "wrong", certs.PKCS12)


def test_unsupported_keys_are_refused():
    small = rsa.generate_private_key(65537, 1024)  # noqa: S505 - must be refused
    with pytest.raises(CryptoInputError, match="not supported"):
        certs.parse_import(_pem(small, _cert(small, "small")), None, certs.PEM)


def test_secret_value_holds_the_key_only_when_exportable(ca):
    key, cert, root = ca
    imported = certs.parse_import(_pem(key, cert, root), None, certs.PEM)
    locked = certs.secret_value(imported, exportable=False, name="ca")
    assert "PRIVATE KEY" not in locked and x509.load_pem_x509_certificates(locked.encode()) == [cert, root]
    open_ = certs.secret_value(imported, exportable=True, name="ca")
    assert open_.startswith("-----BEGIN PRIVATE KEY-----")
    imported.content_type = certs.PKCS12
    pfx_key, _, _ = pkcs12.load_key_and_certificates(base64.b64decode(certs.secret_value(imported, False, "ca")), None)
    assert pfx_key is None


def test_policy_reflects_the_certificate_and_the_request(ca):
    key, cert, _ = ca
    imported = certs.parse_import(_pem(key, cert), None, certs.PEM)
    policy = certs.build_policy(imported, {"key_props": {"exportable": False, "kty": "EC-HSM"}}, created=100)
    assert policy["key_props"] == {"exportable": False, "kty": "EC-HSM", "reuse_key": False, "crv": "P-384"}
    assert policy["secret_props"] == {"contentType": certs.PEM}
    x509_props = policy["x509_props"]
    assert x509_props["subject"] == "CN=Intermediate, O=Plant"
    assert x509_props["key_usage"] == ["digitalSignature", "keyCertSign", "cRLSign"]
    assert x509_props["ekus"] == ["1.3.6.1.5.5.7.3.2"] and x509_props["sans"] == {"dns_names": ["ca.local"]}
    assert x509_props["validity_months"] == 12
    assert policy["issuer"] == {"name": "Unknown"}
    assert policy["lifetime_actions"][0]["action"]["action_type"] == "EmailContacts"
    assert certs.build_policy(imported, None, 1)["key_props"]["exportable"] is True  # Key Vault's default
    garbage = certs.build_policy(imported, {"lifetime_actions": [1], "issuer": {"name": 5}}, 1)
    assert garbage["issuer"] == {"name": "Unknown"} and garbage["lifetime_actions"][0]["trigger"]


def test_thumbprint_is_base64url_sha1(ca):
    _, cert, _ = ca
    assert crypto.b64url_decode(certs.thumbprint(cert)) == cert.fingerprint(hashes.SHA1())  # noqa: S303
