"""The Azure credential of the function app.

ManagedIdentityCredential in Azure (client id from settings for a user-assigned identity), and locally
against the stack's identity endpoint, which speaks the same App Service protocol; DefaultAzureCredential
only on a developer's own machine.
"""

from __future__ import annotations

from shared.config import Settings


def azure_credential(settings: Settings):
    if settings.use_managed_identity:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)
