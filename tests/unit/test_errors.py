import pytest

from shared.errors import CATALOGUE, OnboardingError


def test_every_code_has_a_client_or_server_status():
    for error in CATALOGUE.values():
        assert 400 <= error.status < 600, error


def test_error_body_carries_code_and_detail():
    err = OnboardingError("certificate_revoked", "serial 01AB")
    assert err.status == 403
    assert err.to_body() == {"error": {"code": "certificate_revoked", "detail": "serial 01AB",
                                       "message": CATALOGUE["certificate_revoked"].message}}


def test_unknown_code_is_a_programming_error():
    with pytest.raises(ValueError):
        OnboardingError("no_such_code")
