"""The Azure credential of the function app.

ManagedIdentityCredential in Azure (client id from settings for a user-assigned identity), and locally
against the stack's identity endpoint, which speaks the same App Service protocol; DefaultAzureCredential
only on a developer's own machine.
"""

from __future__ import annotations

from shared.config import Settings

# The App Service identity endpoint (IDENTITY_ENDPOINT: Functions, and the local stack) is local to the instance: it
# answers at once or not at all. azure-core's defaults (three retries of a refused connection with growing sleeps,
# 300 s socket timeouts) would hold a first call for seconds before it reports a missing endpoint; throttled token
# requests keep their retries. IMDS (no IDENTITY_ENDPOINT) keeps azure-identity's own IMDS-tuned retries.
APP_SERVICE_IDENTITY_OPTIONS = {"connection_timeout": 3, "read_timeout": 10, "retry_total": 3, "retry_connect": 1,
                                "retry_read": 1, "retry_backoff_factor": 0.5, "retry_backoff_max": 4}


def azure_credential(settings: Settings):
    if settings.use_managed_identity:
        from azure.identity import ManagedIdentityCredential

        options = APP_SERVICE_IDENTITY_OPTIONS if settings.get("IDENTITY_ENDPOINT") else {}
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id, **options)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)
