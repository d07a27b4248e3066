"""IoT Hub service clients, one per hub, by connection string or by the app's identity.

Hubs deployed with local auth disabled only accept Entra tokens, hence from_token_credential.
"""

from __future__ import annotations

from shared.config import Settings


def registry_manager(settings: Settings, host_name: str, credential_factory):
    from azure.iot.hub import IoTHubRegistryManager

    connection_string = settings.iot_hub_connection_string(host_name)
    if connection_string:
        manager = IoTHubRegistryManager.from_connection_string(connection_string)
    else:
        manager = IoTHubRegistryManager.from_token_credential(host_name, credential_factory())
    # msrest opens a new TLS connection per call unless told to keep it alive (~20 ms of each 22 ms call).
    manager.protocol.config.keep_alive = True
    return manager
