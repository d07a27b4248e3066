from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from local.seed.pki import empty_crl, ensure_root_ca, import_pem, make_intermediate


def test_root_is_created_once_and_reloaded(tmp_path):
    first = ensure_root_ca(tmp_path)
    second = ensure_root_ca(tmp_path)
    assert first.certificate == second.certificate
    assert (tmp_path / "root-ca-key.pem").stat().st_mode & 0o077 == 0


def test_intermediate_chains_to_root_and_its_empty_crl_verifies(tmp_path):
    root = ensure_root_ca(tmp_path)
    cert, key = make_intermediate(root, "intermediate-ca-west", "west")
    cert.verify_directly_issued_by(root.certificate)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    crl = x509.load_der_x509_crl(empty_crl(cert, key))
    assert crl.is_signature_valid(cert.public_key())
    assert not crl.is_signature_valid(root.certificate.public_key())
    assert len(crl) == 0
    assert crl.next_update_utc > crl.last_update_utc
    assert crl.issuer == cert.subject


def test_import_bundle_holds_key_then_certificate_then_chain(tmp_path):
    root = ensure_root_ca(tmp_path)
    cert, key = make_intermediate(root, "intermediate-ca-east", "east")
    pem = import_pem(cert, key, [root.certificate])
    loaded_key = serialization.load_pem_private_key(pem, None)
    assert isinstance(loaded_key, ec.EllipticCurvePrivateKey)
    assert x509.load_pem_x509_certificates(pem) == [cert, root.certificate]
