"""Composition root: builds each client once per process, on first use, from Settings.

Handlers receive a Services object instead of constructing clients, so clients are reused across
invocations (Functions best practice) and tests can hand in their own.
"""

from __future__ import annotations

from functools import cache, cached_property

from shared import keyvault, storage
from shared.config import Settings
from shared.credentials import azure_credential
from shared.iothub import IotHub, RegistryClients, registry_manager
from shared.retry import RetryPolicy
from shared.sql import Database


class Services:
    def __init__(self, settings: Settings):
        self.settings = settings

    @cached_property
    def credential(self):
        return azure_credential(self.settings)

    @cached_property
    def database(self) -> Database:
        return Database(self.settings.sql_connection_string)

    @cached_property
    def blob_service(self):
        return storage.blob_service(self.settings, lambda: self.credential)

    @cached_property
    def token_blob_service(self):
        """Blob with the app's identity even locally (user delegation keys: twin_setup/offload.py)."""
        return storage.token_blob_service(self.settings, lambda: self.credential)

    @cached_property
    def queue_service(self):
        return storage.queue_service(self.settings, lambda: self.credential)

    def queue(self, name: str):
        """A QueueClient for sending/receiving base64 messages (what queue triggers read)."""
        return storage.message_queue(self.queue_service, name)

    @cached_property
    def certificates(self):
        return keyvault.certificate_client(self.settings, self.credential)

    @cached_property
    def keys(self):
        return keyvault.key_client(self.settings, self.credential)

    @cached_property
    def registries(self) -> RegistryClients:
        """The tuned IoTHubRegistryManager of each hub, one per process, shared by every feature."""
        return RegistryClients(lambda host: registry_manager(self.settings, host, lambda: self.credential))

    def registry_manager(self, host_name: str):
        """The IoTHubRegistryManager of one hub (for tools and tests; product code goes through iothub())."""
        return self.registries(host_name)

    def iothub(self, policy: RetryPolicy | None = None) -> IotHub:
        """An IoT Hub adapter over the shared clients; policy: the retry policy of calls made without a budget."""
        return IotHub(self.registries, policy or RetryPolicy(), self.settings.iot_hub_timeout_s)


@cache
def services() -> Services:
    """The process-wide Services built from the environment."""
    return Services(Settings())
