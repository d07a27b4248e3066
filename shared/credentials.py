"""The Azure credential of the function app.

ManagedIdentityCredential in Azure (client id from settings for a user-assigned identity), and locally
against the stack's identity endpoint, which speaks the same App Service protocol; DefaultAzureCredential
only on a developer's own machine.
"""

from __future__ import annotations

from shared.config import Settings
from shared.retry import RetryBudget, RetryPolicy, TransientError

# The App Service identity endpoint (IDENTITY_ENDPOINT: Functions, and the local stack) is local to the instance: it
# answers at once or not at all. azure-core's defaults (three retries of a refused connection with growing sleeps,
# 300 s socket timeouts) would hold a first call for seconds before it reports a missing endpoint; throttled token
# requests keep their retries. IMDS (no IDENTITY_ENDPOINT) keeps azure-identity's own IMDS-tuned retries.
APP_SERVICE_IDENTITY_OPTIONS = {"connection_timeout": 3, "read_timeout": 10, "retry_total": 3, "retry_connect": 1,
                                "retry_read": 1, "retry_backoff_factor": 0.5, "retry_backoff_max": 4}


# Token requests that failed, through the one retry policy (shared/retry.py): an identity endpoint that answers 503
# for longer than azure-core's quick retries above (an instance's endpoint restarting) fails no call of the app. A
# token is cached for its lifetime, so this runs only when one is fetched.
TOKEN_RETRY = RetryPolicy(attempts=4, base_s=1.0, budget_s=20.0, max_backoff_s=4.0)


class RetryingCredential:
    """A credential whose failed token requests are retried under TOKEN_RETRY, then raised as the credential raised
    them. azure-identity reports every failed answer of the App Service endpoint as CredentialUnavailableError (a
    ClientAuthenticationError), whatever its status (azure-identity 1.27, _internal/msal_managed_identity_client.py
    _request_token), so a 503 cannot be told from a misconfigured identity: the latter also costs the retries
    before it fails (closed, as before)."""

    def __init__(self, inner, policy: RetryPolicy = TOKEN_RETRY):
        self._inner = inner
        self._policy = policy

    def get_token(self, *scopes, **kwargs):
        return self._retried(lambda: self._inner.get_token(*scopes, **kwargs))

    def get_token_info(self, *scopes, options=None):
        return self._retried(lambda: self._inner.get_token_info(*scopes, options=options))

    def close(self) -> None:
        self._inner.close()

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *args) -> None:
        self._inner.__exit__(*args)

    def _retried(self, call):
        from azure.core.exceptions import ClientAuthenticationError

        def attempt():
            try:
                return call()
            except ClientAuthenticationError as exc:
                raise TransientError(f"token request failed: {exc.message}") from exc

        try:
            return RetryBudget(self._policy).run(attempt, "managed identity token")
        except TransientError as exc:
            raise exc.__cause__ from None


def azure_credential(settings: Settings):
    if settings.use_managed_identity:
        from azure.identity import ManagedIdentityCredential

        options = APP_SERVICE_IDENTITY_OPTIONS if settings.get("IDENTITY_ENDPOINT") else {}
        return RetryingCredential(ManagedIdentityCredential(client_id=settings.managed_identity_client_id,
                                                            **options))
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)
