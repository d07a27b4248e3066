"""The device side of a twin, over the IoT Hub emulator's device routes (real sensors use MQTT/AMQP).

`GET /devices/{id}/twin?desiredVersionAbove=N` long-polls until desired.$version passes N;
`PATCH /devices/{id}/twin/properties/reported` merges reported properties.
"""

from __future__ import annotations

from local.iothub.auth import make_sas
from local.json_client import JsonClient

API_VERSION = "2021-04-12"


class DeviceLink:
    """One hub's device-side endpoint, shared by the simulated devices on that hub (thread-safe)."""

    def __init__(self, host_name: str, service_key: str, ca_bundle: str | None = None, policy: str = "service"):
        self.host_name = host_name
        self._key = service_key
        self._policy = policy
        self._client = JsonClient(f"https://{host_name}", ca_bundle)

    def _call(self, method: str, path: str, **kwargs) -> dict:
        """One device-side call; a throttled (429) or busy (503) hub is retried after its Retry-After."""
        response = self._client.request(
            method, path, headers=lambda: {"Authorization": make_sas(self.host_name, self._key, self._policy)},
            throttled_attempts=6, **kwargs)
        return response.raise_for_status(f"{method} {path}").json()

    def twin(self, device_id: str, desired_version_above: int | None = None, timeout_s: int = 30) -> dict:
        params = {"api-version": API_VERSION}
        if desired_version_above is not None:
            params.update(desiredVersionAbove=str(desired_version_above), timeoutSeconds=str(timeout_s))
        return self._call("GET", f"/devices/{device_id}/twin", params=params, timeout_s=timeout_s + 10)

    def report(self, device_id: str, reported: dict) -> dict:
        return self._call("PATCH", f"/devices/{device_id}/twin/properties/reported",
                          params={"api-version": API_VERSION}, body=reported, timeout_s=30)
