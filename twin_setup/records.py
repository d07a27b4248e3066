"""Where twin setup writes besides the twin: full configurations in Blob, failure rows in the audit trail.

Configurations: `device-configurations/{deviceId}/{hash}.json`, the canonical JSON of the whole merged
document. The name carries the content hash, so a write is idempotent (the same name always holds the same
bytes) and a device can check what it downloaded against `configurationHash` in its desired properties.

Audit: provisioning_events rows with outcome 'error' for permanent twin setup failures (the schema's CHECK
allows allocated / rejected / error; a successful configuration is recorded on the twin itself and in
telemetry). Best effort: a failed audit write is logged loudly and never changes the outcome.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from shared.sql import Database
from twin_setup.retry import TransientError

log = logging.getLogger(__name__)
MAX_DETAILS = 4000


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


class FailureAudit:
    def __init__(self, database: Database):
        self._db = database

    def record(self, device_id: str, reason_code: str, hub: str | None, details: dict[str, Any]) -> bool:
        text = json.dumps({"stage": "twinSetup", **details}, default=str, sort_keys=True)[:MAX_DETAILS]
        try:
            self._db.execute(
                "INSERT INTO provisioning_events (event_id, at, registration_id, outcome, reason_code, hub, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [str(uuid.uuid4()), dt.datetime.now(dt.UTC).replace(tzinfo=None), device_id[:128], "error",
                 reason_code, hub, text],
            )
        except Exception as exc:  # noqa: BLE001 - audit must not change the outcome
            log.error("audit write failed for %s (%s): %s", device_id[:128], reason_code, type(exc).__name__)
            return False
        return True
