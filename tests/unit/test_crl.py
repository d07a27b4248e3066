import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from shared.crl import CrlInvalid, verify_and_index
from tests.pki_helpers import NOW, make_ca


def test_valid_crl_is_indexed():
    ca = make_ca()
    index = verify_and_index(ca.crl(revoked=[5, 0xABCDEF], number=7), ca.certificate, NOW)
    assert index.is_revoked(0xABCDEF) and index.is_revoked(5)
    assert not index.is_revoked(6)
    assert index.crl_number == 7 and len(index) == 2


def test_crl_signed_by_another_key_is_refused():
    ca, other = make_ca(), make_ca()
    with pytest.raises(CrlInvalid, match="signature"):
        verify_and_index(ca.crl(key=other.key), ca.certificate, NOW)


def test_crl_of_another_issuer_is_refused():
    ca, other = make_ca(region="west"), make_ca(region="east")
    with pytest.raises(CrlInvalid, match="issuer"):
        verify_and_index(other.crl(), ca.certificate, NOW)


def test_expired_crl_is_refused_unless_within_grace():
    ca = make_ca()
    der = ca.crl(next_update=NOW - dt.timedelta(minutes=10))
    with pytest.raises(CrlInvalid, match="expired"):
        verify_and_index(der, ca.certificate, NOW)
    assert verify_and_index(der, ca.certificate, NOW, grace=dt.timedelta(hours=1)).crl_number == 1


@pytest.mark.parametrize("garbage", [b"", b"not a crl", b"\x30\x03\x02\x01\x01"])
def test_unreadable_crl_is_refused(garbage):
    with pytest.raises(CrlInvalid, match="unreadable"):
        verify_and_index(garbage, make_ca().certificate, NOW)


def test_a_crl_is_verified_against_any_current_version_of_its_ca():
    old, new, withdrawn = make_ca(), make_ca(), make_ca()  # one CA name and subject, three keys
    der = new.crl(revoked=[7], number=3)
    index = verify_and_index(der, [old.certificate, new.certificate], NOW)
    assert index.is_revoked(7) and index.crl_number == 3
    with pytest.raises(CrlInvalid, match="any current key"):
        verify_and_index(withdrawn.crl(), [old.certificate, new.certificate], NOW)


def test_a_crl_without_a_crl_number_is_refused():
    ca = make_ca()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
               .last_update(NOW - dt.timedelta(hours=1)).next_update(NOW + dt.timedelta(days=7)))
    der = builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(CrlInvalid, match="CRL number"):
        verify_and_index(der, ca.certificate, NOW)
