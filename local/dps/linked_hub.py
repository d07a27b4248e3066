"""DPS's link to one IoT hub. DPS links a hub by its connection string and creates each assigned device there,
with the initial twin, in one call to the registry's bulk API (`POST /devices`), as the IoT Hub REST
reference describes it (ExportImportDevice entries with importMode create)."""

from __future__ import annotations

import os

from local.iothub.auth import make_sas
from local.json_client import JsonClient

API_VERSION = "2021-04-12"


class LinkError(Exception):
    """The hub refused or failed the device creation; the message carries its error code."""


class LinkedHub:
    def __init__(self, connection_string: str, ca_bundle: str | None = None):
        parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
        self.host_name = parts["HostName"]
        self._policy = parts.get("SharedAccessKeyName")
        self._key = parts["SharedAccessKey"]
        self._client = JsonClient(f"https://{self.host_name}", ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE"))

    def create_device(self, device_id: str, *, iot_edge: bool, tags: dict | None, desired: dict | None,
                      attempts: int = 5) -> bool:
        """Create the device (X.509 CA authentication) with its initial twin. False when it already exists
        (a registration DPS retries); LinkError when the hub refuses it."""
        entry: dict = {"id": device_id, "importMode": "create", "status": "enabled",
                       "authentication": {"type": "certificateAuthority"}, "capabilities": {"iotEdge": iot_edge}}
        if tags:
            entry["tags"] = tags
        if desired:
            entry["properties"] = {"desired": desired}
        response = self._client.request(
            "POST", "/devices", params={"api-version": API_VERSION}, body=[entry], throttled_attempts=attempts,
            headers=lambda: {"Authorization": make_sas(self.host_name, self._key, self._policy)})
        if response.status == 200:
            return True
        body = response.json() if response.data.startswith(b"{") else {}
        errors = body.get("errors") or [{}]
        code = errors[0].get("errorCode") or body.get("Message") or f"HTTP {response.status}"
        if code == "DeviceAlreadyExists":
            return False
        raise LinkError(f"device creation in {self.host_name} failed: {code}")
