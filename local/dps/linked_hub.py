"""DPS's link to one IoT hub. DPS links a hub by its connection string and creates each assigned device there,
with the initial twin, in one call to the registry's bulk API (`POST /devices`), as the IoT Hub REST
reference describes it (ExportImportDevice entries with importMode create).

The identity DPS creates for an X.509 device is a self-signed (thumbprint) one whatever the enrollment's kind:
"creating a device identity in an IoT hub using the device's leaf certificate as the credential" (azure-docs
articles/iot-dps/how-to-roll-certificates.md, "Rolling the certificate in the IoT hub"); devices provisioned
through a CA enrollment group show up in the hub as "X509 self-signed" (MicrosoftDocs/azure-docs issues 70976,
108289; Azure/azure-iot-sdk-csharp issue 3360). The thumbprint is the SHA-1 of the leaf's DER, upper-case hex,
in both slots: "When I tried this with only a primary certificate, the primary thumbprint is duplicated into the
secondary" (Azure/iotedge issue 2951, a user's observation: UNCONFIRMED by Microsoft's docs). Whether DPS writes
the SHA-1 or the SHA-256 thumbprint is not documented either (the same thread reports the hub showing SHA-256;
IoT Hub accepts both): SHA-1 here, as the service API's X509CertificateInfo.sha1Thumbprint, UNCONFIRMED.

On re-provisioning with a new certificate DPS updates the hub's registry ("the provisioning service can update
the IoT Hub device registry information as needed when the device is reprovisioned", same article): here a
read of the device, then a conditional replace (`GET /devices/{id}`, `PUT /devices/{id}` with If-Match, again
on 412), and moving or resetting the twin (`GET|PUT /twins/{id}`, `DELETE /devices/{id}`) as the reprovision
policy says (local/dps/simulator.py).
"""

from __future__ import annotations

import copy
import hashlib
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from local.iothub.auth import make_sas
from local.json_client import JsonClient, JsonResponse

API_VERSION = "2021-04-12"
ETAG_ATTEMPTS = 5  # conditional replaces tried before giving up on a device someone keeps changing


class LinkError(Exception):
    """The hub refused or failed the device creation; the message carries its error code."""


def thumbprint(cert: x509.Certificate) -> str:
    """The SHA-1 thumbprint of a certificate (its DER), upper-case hex, as DPS shows it."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()  # noqa: S324


def self_signed(print_: str) -> dict:
    """The authentication DPS gives an X.509 device: its leaf's thumbprint in both slots."""
    return {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": print_, "secondaryThumbprint": print_}}


def _error_code(response: JsonResponse) -> str:
    body = response.json() if response.data.startswith(b"{") else {}
    errors = body.get("errors") or [{}]
    return (errors[0].get("errorCode") or body.get("ErrorCode") or body.get("Message")
            or f"HTTP {response.status}")


class LinkedHub:
    def __init__(self, connection_string: str, ca_bundle: str | None = None):
        parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
        self.host_name = parts["HostName"]
        self._policy = parts.get("SharedAccessKeyName")
        self._key = parts["SharedAccessKey"]
        self._client = JsonClient(f"https://{self.host_name}", ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE"))

    def _call(self, method: str, path: str, *, body=None, if_match: str | None = None,
              attempts: int = 5) -> JsonResponse:
        def headers() -> dict[str, str]:
            found = {"Authorization": make_sas(self.host_name, self._key, self._policy)}
            if if_match is not None:
                found["If-Match"] = if_match
            return found

        return self._client.request(method, path, params={"api-version": API_VERSION}, body=body,
                                    throttled_attempts=attempts, headers=headers)

    def create_device(self, device_id: str, *, iot_edge: bool, tags: dict | None, desired: dict | None,
                      thumbprint: str, attempts: int = 5) -> bool:
        """Create the device (self-signed X.509 authentication with the leaf's thumbprint) with its initial twin.
        False when it already exists (a registration DPS retries); LinkError when the hub refuses it."""
        entry: dict = {"id": device_id, "importMode": "create", "status": "enabled",
                       "authentication": self_signed(thumbprint), "capabilities": {"iotEdge": iot_edge}}
        if tags:
            entry["tags"] = tags
        if desired:
            entry["properties"] = {"desired": desired}
        response = self._call("POST", "/devices", body=[entry], attempts=attempts)
        if response.status == 200:
            return True
        code = _error_code(response)
        if code == "DeviceAlreadyExists":
            return False
        raise LinkError(f"device creation in {self.host_name} failed: {code}")

    def get_device(self, device_id: str) -> dict | None:
        response = self._call("GET", f"/devices/{device_id}")
        if response.status == 404:
            return None
        if response.status != 200:
            raise LinkError(f"reading device {device_id} in {self.host_name} failed: {_error_code(response)}")
        return response.json()

    def update_credential(self, device_id: str, thumbprint: str, *, iot_edge: bool | None = None) -> dict | None:
        """Give an existing device the thumbprint of its new leaf (and iotEdge, when given): GET the identity,
        PUT it back changed with If-Match on its etag, read again after a 412. None when the device does not
        exist (the caller creates it); LinkError when the hub refuses."""
        for _ in range(ETAG_ATTEMPTS):
            device = self.get_device(device_id)
            if device is None:
                return None
            body = copy.deepcopy(device)
            body["authentication"] = self_signed(thumbprint)
            if iot_edge is not None:
                body["capabilities"] = {"iotEdge": iot_edge}
            response = self._call("PUT", f"/devices/{device_id}", body=body, if_match=f'"{device["etag"]}"')
            if response.status == 200:
                return response.json()
            if response.status == 404:
                return None
            if response.status != 412:
                raise LinkError(f"updating device {device_id} in {self.host_name} failed: {_error_code(response)}")
        raise LinkError(f"updating device {device_id} in {self.host_name} failed: etag changed {ETAG_ATTEMPTS} "
                        "times (PreconditionFailed)")

    def get_twin(self, device_id: str) -> dict | None:
        response = self._call("GET", f"/twins/{device_id}")
        if response.status == 404:
            return None
        if response.status != 200:
            raise LinkError(f"reading the twin of {device_id} in {self.host_name} failed: {_error_code(response)}")
        return response.json()

    def replace_twin(self, device_id: str, tags: dict | None, desired: dict | None) -> dict:
        """Reset tags and desired properties to the given ones (PUT /twins/{id}: replace, not merge)."""
        body = {"tags": tags or {}, "properties": {"desired": desired or {}}}
        response = self._call("PUT", f"/twins/{device_id}", body=body, if_match='"*"')
        if response.status != 200:
            raise LinkError(f"resetting the twin of {device_id} in {self.host_name} failed: "
                            f"{_error_code(response)}")
        return response.json()

    def delete_device(self, device_id: str) -> bool:
        """Remove the device (unconditionally); False when it was not there."""
        response = self._call("DELETE", f"/devices/{device_id}", if_match='"*"')
        if response.status == 404:
            return False
        if response.status not in (200, 204):
            raise LinkError(f"deleting device {device_id} in {self.host_name} failed: {_error_code(response)}")
        return True
