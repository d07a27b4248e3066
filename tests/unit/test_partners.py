"""The partner checks (cert_lifecycle/partners.py): scope, quota arithmetic and the shared counter, and the token
validation that runs both against Entra and against the local stack's issuer."""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from cert_lifecycle.partners import (
    PARTNER_ROLE,
    Partner,
    PartnerAuthenticator,
    PartnerDirectory,
    TokenSettings,
    check_scope,
    parse_list,
    quota_day,
    seconds_to_next_day,
)
from local.seed.seed import SCHEMA, schema_statements
from shared.errors import OnboardingError
from shared.identity import parse_device_id
from shared.sql import Database

ISSUER, AUDIENCE = "https://login.example/tenant/v2.0", "api-client-id"


def partner(**fields) -> Partner:
    base = {"partner_id": "p1", "name": "Acme", "facilities": ("*",), "sensor_types": ("*",),
            "serial_prefix": None, "daily_quota": 10}
    return Partner(**{**base, **fields})


@pytest.mark.parametrize("fields,device,code", [
    ({}, "sensor-temp-FAC05-SN1", None),
    ({"facilities": ("FAC05", "FAC06")}, "sensor-temp-FAC06-SN1", None),
    ({"facilities": ("FAC05",)}, "sensor-temp-FAC07-SN1", "facility_not_allowed"),
    ({"sensor_types": ("temp",)}, "sensor-press-FAC05-SN1", "sensor_type_not_allowed"),
    ({"serial_prefix": "AC"}, "sensor-temp-FAC05-AC17", None),
    ({"serial_prefix": "AC"}, "sensor-temp-FAC05-SN17", "serial_not_allowed"),
])
def test_scope(fields, device, code):
    if code is None:
        check_scope(partner(**fields), parse_device_id(device))
    else:
        with pytest.raises(OnboardingError) as refused:
            check_scope(partner(**fields), parse_device_id(device))
        assert refused.value.code == code and refused.value.status == 403


def test_retry_after_is_the_time_to_the_next_utc_day():
    assert seconds_to_next_day(dt.datetime(2025, 3, 1, 23, 59, 30, tzinfo=dt.UTC)) == 30
    assert seconds_to_next_day(dt.datetime(2025, 3, 1, 0, 0, 0, tzinfo=dt.UTC)) == 86400
    assert seconds_to_next_day(dt.datetime(2025, 3, 1, 23, 59, 59, 999000, tzinfo=dt.UTC)) == 1
    assert quota_day(dt.datetime(2025, 3, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))) == "2025-03-02"


def test_lists():
    assert parse_list(["FAC05", "FAC06,FAC05", " "]) == "FAC05,FAC06"
    assert parse_list([]) == "*" and parse_list(["*", "FAC01"]) == "*"


@pytest.fixture
def directory(tmp_path):
    db = Database(f"Driver=SQLite3;Database={tmp_path / 'partners.db'}")
    for statement in schema_statements(SCHEMA.read_text()):
        db.execute(statement)
    yield PartnerDirectory(db)
    db.close()


def test_the_shared_counter_takes_at_most_the_quota_and_restarts_each_day(directory):
    p = directory.create("Acme", facilities=["FAC05"], daily_quota=2)
    day1, day2 = dt.datetime(2025, 3, 1, 12, tzinfo=dt.UTC), dt.datetime(2025, 3, 2, 0, 1, tzinfo=dt.UTC)
    assert [directory.take_quota(p.partner_id, day1) for _ in range(3)] == [True, True, False]
    directory.return_quota(p.partner_id, day1)
    assert directory.take_quota(p.partner_id, day1) and not directory.take_quota(p.partner_id, day1)
    assert [directory.take_quota(p.partner_id, day2) for _ in range(3)] == [True, True, False]
    assert directory.set_active(p.partner_id, False)
    assert not directory.take_quota(p.partner_id, dt.datetime(2025, 3, 3, tzinfo=dt.UTC))
    assert directory.get(p.partner_id).facilities == ("FAC05",)


@pytest.fixture
def tokens(directory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = SimpleNamespace(get_signing_key_from_jwt=lambda token: SimpleNamespace(key=key.public_key()))
    auth = PartnerAuthenticator(TokenSettings(ISSUER, AUDIENCE, "https://unused"), directory, jwks_client=keys)
    registered = directory.create("Acme")

    def token(signing_key=key, **claims):
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "azp": registered.partner_id, "roles": [PARTNER_ROLE],
                "iat": now, "exp": now + 600, **claims}
        return "Bearer " + jwt.encode({k: v for k, v in body.items() if v is not None}, signing_key, algorithm="RS256")

    return SimpleNamespace(auth=auth, token=token, partner=registered, directory=directory)


def test_a_valid_token_names_the_partner(tokens):
    assert tokens.auth.partner(tokens.token()).partner_id == tokens.partner.partner_id
    v1 = tokens.token(azp=None, appid=tokens.partner.partner_id)  # a v1 token names the caller in appid
    assert tokens.auth.partner(v1).partner_id == tokens.partner.partner_id


@pytest.mark.parametrize("header,code", [(None, "partner_credential_required"), ("", "partner_credential_required"),
                                         ("Basic abc", "partner_credential_required"),
                                         ("Bearer nonsense", "partner_credential_invalid")])
def test_no_credential(tokens, header, code):
    with pytest.raises(OnboardingError) as refused:
        tokens.auth.partner(header)
    assert refused.value.code == code and refused.value.status == 401


def test_invalid_or_unauthorised_tokens(tokens):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {"partner_credential_invalid": [tokens.token(signing_key=other), tokens.token(iss="https://evil"),
                                            tokens.token(aud="someone-else"), tokens.token(exp=int(time.time()) - 600)],
             "partner_not_authorized": [tokens.token(roles=[]), tokens.token(roles=["Other.Role"]),
                                        tokens.token(azp="unregistered-client")]}
    for code, headers in cases.items():
        for header in headers:
            with pytest.raises(OnboardingError) as refused:
                tokens.auth.partner(header)
            assert refused.value.code == code
    tokens.directory.set_active(tokens.partner.partner_id, False)
    with pytest.raises(OnboardingError, match="disabled"):
        tokens.auth.partner(tokens.token())


def test_unconfigured_partner_tokens_fail_closed(directory):
    with pytest.raises(OnboardingError) as refused:
        PartnerAuthenticator(None, directory).partner("Bearer x")
    assert refused.value.code == "configuration_error"
