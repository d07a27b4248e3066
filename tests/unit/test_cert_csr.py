"""CSR checks and the device certificate profile. Pure (a local key stands in for Key Vault where signing)."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cert_lifecycle.csr import check_csr, device_certificate_builder, random_serial_number
from shared.errors import OnboardingError
from tests.pki_helpers import NOW, make_ca

LIMIT = 16 * 1024
CN = "sensor-temp-FAC03-SN482019"


def csr(cn=CN, key=None, extra_cn=None, ca_flag=False, fmt=serialization.Encoding.PEM) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if extra_cn:
        names.append(x509.NameAttribute(NameOID.COMMON_NAME, extra_cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    if ca_flag:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(fmt)


def code_of(text, **kwargs) -> str:
    with pytest.raises(OnboardingError) as refused:
        check_csr(text, LIMIT, **kwargs)
    return refused.value.code


@pytest.mark.parametrize("key,described", [
    (ec.generate_private_key(ec.SECP256R1()), "EC P-256"),
    (ec.generate_private_key(ec.SECP384R1()), "EC P-384"),
    (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA 2048"),
])
def test_allowed_keys_pass(key, described):
    checked = check_csr(csr(key=key), LIMIT)
    assert (checked.identity.device_id, checked.key_description) == (CN, described)


def test_der_and_the_legacy_pem_header_are_accepted():
    assert check_csr(csr(fmt=serialization.Encoding.DER), LIMIT).identity.facility == "FAC03"
    legacy = csr().replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
    assert check_csr(legacy.decode(), LIMIT).identity.serial == "SN482019"


def test_a_der_csr_whose_signature_ends_in_a_whitespace_byte_is_accepted():
    # About one DER CSR in 40 ends with a byte such as 0x0A or 0x20; trimming it as text broke the request.
    der = next(d for d in iter(lambda: csr(fmt=serialization.Encoding.DER), None) if d[-1:].isspace())
    assert check_csr(der, LIMIT).identity.device_id == CN


def test_a_tampered_csr_fails_proof_of_possession():
    der = bytearray(x509.load_pem_x509_csr(csr()).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0xFF
    assert code_of(bytes(der)) in ("csr_signature_invalid", "csr_invalid")
    subject_swapped = bytearray(csr(fmt=serialization.Encoding.DER))
    at = subject_swapped.find(b"SN482019")
    subject_swapped[at:at + 8] = b"SN999999"
    assert code_of(bytes(subject_swapped)) == "csr_signature_invalid"


@pytest.mark.parametrize("make,code", [
    (lambda: csr(key=rsa.generate_private_key(public_exponent=65537, key_size=1024)), "weak_key"),  # noqa: S505
    (lambda: csr(key=ec.generate_private_key(ec.SECP521R1())), "weak_key"),
    (lambda: csr(key=ec.generate_private_key(ec.SECP256K1())), "weak_key"),
    (lambda: csr(key=ed25519.Ed25519PrivateKey.generate()), "weak_key"),
    (lambda: csr(cn="device-42"), "invalid_registration_id"),
    (lambda: csr(cn="sensor-laser-FAC03-SN1"), "unknown_sensor_type"),
    (lambda: csr(extra_cn="sensor-temp-FAC04-SN1"), "invalid_registration_id"),
    (lambda: b"", "csr_invalid"),
    (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE REQUEST-----\n", "csr_invalid"),
    (lambda: "\u00e9t\u00e9", "csr_invalid"),
    (lambda: b"A" * (LIMIT + 1), "request_too_large"),
])
def test_bad_csrs_are_refused_with_their_code(make, code):
    assert code_of(make()) == code


def test_a_renewal_csr_must_name_the_device_itself():
    assert code_of(csr(), expected_device_id="sensor-temp-FAC03-SN000001") == "csr_subject_mismatch"
    assert check_csr(csr(), LIMIT, expected_device_id=CN).identity.device_id == CN


def test_the_certificate_profile_is_the_cas_whatever_the_csr_asks_for():
    ca = make_ca()
    checked = check_csr(csr(ca_flag=True), LIMIT)
    cert = device_certificate_builder(checked, ca.certificate, random_serial_number(), NOW,
                                      dt.timedelta(days=730), dt.timedelta(minutes=5)).sign(ca.key, hashes.SHA256())
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ext.get_extension_for_class(x509.BasicConstraints).critical
    usage = ext.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.key_encipherment
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(checked.csr.public_key())
    assert ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == \
        x509.SubjectKeyIdentifier.from_public_key(ca.certificate.public_key()).digest
    assert cert.subject.rfc4514_string() == f"CN={CN}" and cert.issuer == ca.certificate.subject
    assert cert.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=730)


def test_validity_never_outlives_the_ca_and_an_expired_ca_issues_nothing():
    ca = make_ca()  # valid until NOW + 1800 days
    checked = check_csr(csr(), LIMIT)
    builder = device_certificate_builder(checked, ca.certificate, 7, NOW, dt.timedelta(days=5000),
                                         dt.timedelta(minutes=5))
    assert builder.sign(ca.key, hashes.SHA256()).not_valid_after_utc == ca.certificate.not_valid_after_utc
    with pytest.raises(OnboardingError) as expired:
        device_certificate_builder(checked, ca.certificate, 7, NOW + dt.timedelta(days=2000), dt.timedelta(days=1),
                                   dt.timedelta(minutes=5))
    assert expired.value.code == "configuration_error"


def test_serials_are_positive_and_at_most_159_bits():
    serials = [random_serial_number() for _ in range(200)]
    assert all(0 < s < 2**159 for s in serials) and len(set(serials)) == 200
