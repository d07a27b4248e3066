from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from local.seed.pki import ensure_root_ca, import_pem, make_intermediate


def test_root_is_created_once_and_reloaded(tmp_path):
    first = ensure_root_ca(tmp_path)
    second = ensure_root_ca(tmp_path)
    assert first.certificate == second.certificate
    assert (tmp_path / "root-ca-key.pem").stat().st_mode & 0o077 == 0


def test_intermediate_chains_to_root_and_names_its_key(tmp_path):
    """The CRLs are the product publisher's (tests/integration/test_crl_distribution.py checks the seeded ones)."""
    root = ensure_root_ca(tmp_path)
    cert, key = make_intermediate(root, "intermediate-ca-west", "west")
    cert.verify_directly_issued_by(root.certificate)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign is True
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def test_import_bundle_holds_key_then_certificate_then_chain(tmp_path):
    root = ensure_root_ca(tmp_path)
    cert, key = make_intermediate(root, "intermediate-ca-east", "east")
    pem = import_pem(cert, key, [root.certificate])
    loaded_key = serialization.load_pem_private_key(pem, None)
    assert isinstance(loaded_key, ec.EllipticCurvePrivateKey)
    assert x509.load_pem_x509_certificates(pem) == [cert, root.certificate]
