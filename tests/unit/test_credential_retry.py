"""The app's credential rides out an identity endpoint that fails for a while (shared/credentials.py)."""

from __future__ import annotations

import pytest
from azure.core.credentials import AccessToken
from azure.identity import CredentialUnavailableError

from shared.credentials import RetryingCredential
from shared.retry import RetryPolicy

QUICK = RetryPolicy(attempts=4, base_s=0.001, budget_s=5, max_backoff_s=0.001)


class Endpoint:
    """A credential whose endpoint is down for the first `failures` requests."""

    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0

    def get_token(self, *scopes, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise CredentialUnavailableError("App Service managed identity configuration not found in environment.")
        return AccessToken("token", 4102444800)


def test_a_token_request_during_an_outage_succeeds_when_the_endpoint_returns():
    endpoint = Endpoint(failures=2)
    token = RetryingCredential(endpoint, QUICK).get_token("https://vault.azure.net/.default")
    assert token.token == "token" and endpoint.calls == 3


def test_an_endpoint_that_stays_down_fails_with_the_credentials_own_error():
    endpoint = Endpoint(failures=99)
    with pytest.raises(CredentialUnavailableError):
        RetryingCredential(endpoint, QUICK).get_token("https://vault.azure.net/.default")
    assert endpoint.calls == QUICK.attempts
