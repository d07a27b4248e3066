"""Where twin setup writes besides the twin and the audit trail: full configurations in Blob.

Configurations: `device-configurations/{deviceId}/{hash}.json`, the canonical JSON of the whole merged
document. The name carries the content hash, so a write is idempotent (the same name always holds the same
bytes) and a device can check what it downloaded against `configurationHash` in its desired properties.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from shared.retry import TransientError

log = logging.getLogger(__name__)


def configuration_blob_name(device_id: str, config_hash: str) -> str:
    return f"{device_id}/{config_hash}.json"


class ConfigurationStore:
    def __init__(self, container: Callable[[], Any]):
        self._container = container  # -> azure.storage.blob ContainerClient

    def url(self, device_id: str, config_hash: str) -> str:
        base = self._container().url.rstrip("/")
        return f"{base}/{quote(device_id, safe='')}/{config_hash}.json"

    def put(self, device_id: str, config_hash: str, content: bytes) -> None:
        from azure.core.exceptions import AzureError
        from azure.storage.blob import ContentSettings

        name = configuration_blob_name(device_id, config_hash)
        try:
            self._container().upload_blob(name, content, overwrite=True,
                                          content_settings=ContentSettings(content_type="application/json"),
                                          metadata={"configurationHash": config_hash})
        except AzureError as exc:
            raise TransientError(f"configuration blob {name}: {type(exc).__name__}") from exc

    def delete(self, device_id: str, config_hash: str) -> None:
        """Best effort: remove a configuration written for a device that turned out to be gone."""
        from azure.core.exceptions import AzureError

        try:
            self._container().delete_blob(configuration_blob_name(device_id, config_hash))
        except AzureError as exc:
            log.warning("could not delete the configuration of %s: %s", device_id, type(exc).__name__)
