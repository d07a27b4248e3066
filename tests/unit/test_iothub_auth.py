"""SAS and bearer verification of the IoT Hub emulator, against tokens built by the production SDK."""

from __future__ import annotations

import base64
import secrets
import time
import urllib.parse

import pytest
from azure.iot.hub.sastoken import SasToken

from local.identity import issue_token
from local.iothub.auth import (
    ALL_RIGHTS,
    REGISTRY_WRITE,
    SERVICE_CONNECT,
    AuthError,
    authenticate,
    make_sas,
    sign,
    verify_sas,
)

HOST = "localhost:8441"
OWNER = base64.b64encode(secrets.token_bytes(32)).decode()
SERVICE = base64.b64encode(secrets.token_bytes(32)).decode()
DEVICE_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
POLICIES = {"iothubowner": OWNER, "service": SERVICE}
IDENTITY_KEY = secrets.token_bytes(32)


def sdk_token(key: str = OWNER, policy: str = "iothubowner", host: str = HOST, ttl: int = 3600) -> str:
    return str(SasToken(host, key, policy, ttl))


def test_a_token_built_by_azure_iot_hub_is_accepted_with_the_policy_rights():
    principal = verify_sas(sdk_token(), HOST, POLICIES)
    assert (principal.kind, principal.name, principal.rights) == ("policy", "iothubowner", ALL_RIGHTS)
    service = verify_sas(sdk_token(SERVICE, "service"), HOST, POLICIES)
    assert SERVICE_CONNECT in service.rights and REGISTRY_WRITE not in service.rights


def test_host_name_comparison_ignores_case_and_accepts_a_scheme():
    assert verify_sas(sdk_token(host="LOCALHOST:8441"), HOST, POLICIES).name == "iothubowner"
    expiry = int(time.time()) + 60
    resource = urllib.parse.quote_plus(f"https://{HOST}")
    token = (
        f"SharedAccessSignature sr={resource}&sig={urllib.parse.quote(sign(OWNER, resource, expiry))}"
        f"&se={expiry}&skn=iothubowner"
    )
    assert verify_sas(token, HOST, POLICIES).name == "iothubowner"


def _tamper(token: str) -> str:
    fields = dict(part.split("=", 1) for part in token.removeprefix("SharedAccessSignature ").split("&"))
    signature = bytearray(base64.b64decode(urllib.parse.unquote(fields["sig"])))
    signature[0] ^= 1
    fields["sig"] = urllib.parse.quote(base64.b64encode(bytes(signature)).decode())
    return "SharedAccessSignature " + "&".join(f"{k}={v}" for k, v in fields.items())


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (_tamper(sdk_token()), "signature"),
        (sdk_token(SERVICE, "iothubowner"), "signature"),  # right policy name, another policy's key
        (sdk_token(OWNER, "nosuchpolicy"), "policy"),
        (sdk_token(host="other.azure-devices.net"), "audience"),
        (sdk_token(host="localhost:84411"), "audience"),
        (sdk_token(ttl=-5), "expired"),
        ("SharedAccessSignature sr=localhost%3A8441&sig=abc", "without se"),
        ("SharedAccessSignature sr=localhost%3A8441&sig=abc&se=soon&skn=iothubowner", "not a number"),
        ("SharedAccessSignature sr=localhost%3A8441&sig&se=1", "malformed"),
        ("Basic dXNlcjpwYXNz", "not a SharedAccessSignature"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(token, reason):
    with pytest.raises(AuthError, match=reason):
        verify_sas(token, HOST, POLICIES)


def test_expiry_is_checked_against_the_clock():
    token = sdk_token(ttl=60)
    assert verify_sas(token, HOST, POLICIES, now=time.time() + 30)
    with pytest.raises(AuthError, match="expired"):
        verify_sas(token, HOST, POLICIES, now=time.time() + 120)


def test_device_scoped_tokens_verify_against_that_devices_keys():
    keys = {"sensor-1": [DEVICE_KEY], "sensor-2": [base64.b64encode(secrets.token_bytes(32)).decode()]}
    token = make_sas(f"{HOST}/devices/sensor-1", DEVICE_KEY)
    principal = verify_sas(token, HOST, POLICIES, device_keys=lambda d: keys.get(d, []))
    assert (principal.kind, principal.name) == ("device", "sensor-1")
    forged = make_sas(f"{HOST}/devices/sensor-2", DEVICE_KEY)  # sensor-1's key used for sensor-2
    with pytest.raises(AuthError, match="device's keys"):
        verify_sas(forged, HOST, POLICIES, device_keys=lambda d: keys.get(d, []))
    with pytest.raises(AuthError, match="no policy name"):
        verify_sas(token, HOST, POLICIES)  # where device tokens are not accepted


def test_bearer_tokens_from_the_local_identity_are_accepted_for_the_iot_hub_audience_only():
    token, _ = issue_token(IDENTITY_KEY, "https://iothubs.azure.net/.default")
    principal = authenticate(f"Bearer {token}", HOST, POLICIES, IDENTITY_KEY)
    assert principal.kind == "identity" and REGISTRY_WRITE in principal.rights
    vault_token, _ = issue_token(IDENTITY_KEY, "https://vault.azure.net")
    with pytest.raises(AuthError, match="audience"):
        authenticate(f"Bearer {vault_token}", HOST, POLICIES, IDENTITY_KEY)
    with pytest.raises(AuthError, match="signature"):
        authenticate(f"Bearer {token}", HOST, POLICIES, secrets.token_bytes(32))
    with pytest.raises(AuthError, match="does not accept"):
        authenticate(f"Bearer {token}", HOST, POLICIES, None)


@pytest.mark.parametrize("header", [None, "", "Negotiate abc", "Bearer"])
def test_missing_or_unknown_authorization_is_refused(header):
    with pytest.raises(AuthError):
        authenticate(header, HOST, POLICIES, IDENTITY_KEY)
