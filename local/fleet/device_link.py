"""The device side of IoT Hub for simulated sensors: one connection per device, authenticated by its certificate.

`DeviceConnection` is what a sensor holds once DPS has assigned it a hub: an HTTPS connection that presents the
device's certificate (mutual TLS; the IoT Hub emulator matches it against the device's registry identity,
local/iothub/device_auth.py), over which it
- reads its twin and long-polls for desired changes (`GET /devices/{id}/twin?desiredVersionAbove=N`, emulator-only:
  real devices use MQTT/AMQP for twins),
- patches reported properties (`PATCH /devices/{id}/twin/properties/reported`, emulator-only likewise),
- sends device-to-cloud messages (`POST /devices/{id}/messages/events`, IoT Hub's documented HTTPS device API).
A 401 raises `DeviceUnauthorized`: the hub no longer knows this certificate (a new one not yet provisioned, a
disabled or deleted device), and the device should re-provision through DPS, as Microsoft's "How to roll X.509
device certificates" recommends (docs/contracts.md 7.3). 429 and 503 are retried after their Retry-After.

`DeviceLink` (the shared, service-credential link the simulated sensors used before) no longer works against the
emulator, which refuses service credentials on device routes as IoT Hub does; it stays until its callers move.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from local.iothub.auth import make_sas
from local.json_client import HttpError, JsonClient

API_VERSION = "2021-04-12"  # the emulator's twin routes (service API version, as before)
D2C_API_VERSION = "2020-03-13"  # REST "Device - Send Device Event"
THROTTLED_ATTEMPTS = 6


class DeviceUnauthorized(HttpError):
    """The hub refused the device's credential (401): re-provision through DPS, then connect again."""


class DeviceConnection:
    """One device's HTTPS connection to its hub, presenting its certificate; thread-safe, but meant for one device.

    certificate, private_key and chain are `cryptography` objects (chain: the intermediates that link the leaf to
    the hub's trusted root, leaf first not included). ssl loads a client certificate from files only, so they are
    written to a private temporary directory (mode 0700, key 0600), loaded into this connection's SSL context
    once, and removed at once. ca_bundle is the file that verifies the hub's server certificate: the stack's local
    CA alone (`.local/tls/local-ca.pem`) costs far less to load per device than the full REQUESTS_CA_BUNDLE.
    """

    def __init__(self, host_name: str, certificate: x509.Certificate, private_key: Any,
                 chain: Iterable[x509.Certificate] = (), ca_bundle: str | os.PathLike | None = None,
                 device_id: str | None = None, pool_size: int = 2, timeout_s: float = 30):
        self.host_name = host_name
        self.certificate = certificate
        self.device_id = device_id or _common_name(certificate)
        self.thumbprint = hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest().upper()  # noqa: S324
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        # TLS 1.2, as most device stacks speak: a certificate the hub refuses then fails the handshake with the
        # hub's alert. In TLS 1.3 the server checks the client's certificate after the client has finished its
        # side of the handshake, and the refusal reaches the client as a connection closed without an answer.
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        _load_client_certificate(context, certificate, private_key, list(chain))
        self._client = JsonClient(f"https://{host_name}", pool_size=pool_size, timeout_s=timeout_s,
                                  ssl_context=context, num_pools=1)

    # -- the device API ---------------------------------------------------------------------------------------
    def twin(self, desired_version_above: int | None = None, timeout_s: int = 30) -> dict:
        """The twin as the device sees it ({"desired", "reported"}); with desired_version_above, waits up to
        timeout_s (at most 60) for desired.$version to pass it, and returns the twin as it is then."""
        params = {"api-version": API_VERSION}
        if desired_version_above is not None:
            params.update(desiredVersionAbove=str(desired_version_above), timeoutSeconds=str(timeout_s))
        return self._call("GET", f"/devices/{self.device_id}/twin", params=params, timeout_s=timeout_s + 10).json()

    def report(self, reported: Mapping[str, Any]) -> dict:
        """Merge-patch reported properties (None deletes a key); returns the twin as the device then sees it."""
        return self._call("PATCH", f"/devices/{self.device_id}/twin/properties/reported",
                          params={"api-version": API_VERSION}, body=dict(reported)).json()

    def send_event(self, body: bytes | str | Mapping[str, Any], properties: Mapping[str, str] | None = None,
                   content_type: str | None = None) -> None:
        """Send one device-to-cloud message (bytes as they are, text as UTF-8, a mapping as JSON); properties
        become application properties (`iothub-app-{name}` headers). Up to 256 KB; 204 from the hub."""
        if isinstance(body, Mapping):
            content, content_type = json.dumps(body, separators=(",", ":")).encode(), content_type or "application/json"
        elif isinstance(body, str):
            content, content_type = body.encode(), content_type or "text/plain; charset=utf-8"
        else:
            content = bytes(body)
        headers = {f"iothub-app-{name}": str(value) for name, value in (properties or {}).items()}
        headers["Content-Type"] = content_type or "application/octet-stream"
        self._call("POST", f"/devices/{self.device_id}/messages/events", params={"api-version": D2C_API_VERSION},
                   content=content, headers=headers)

    # -- lifetime ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (the pool's sockets); the object cannot be used afterwards."""
        self._client.close()

    def __enter__(self) -> DeviceConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, timeout_s: float = 30, **kwargs):
        what = f"{method} {path}"
        try:
            response = self._client.request(method, path, throttled_attempts=THROTTLED_ATTEMPTS, timeout_s=timeout_s,
                                            **kwargs)
        except HttpError as exc:
            if _certificate_refused(exc):
                raise DeviceUnauthorized(f"{what}: the hub refused the certificate at TLS: {exc}") from exc
            raise
        if response.status == 401:
            raise DeviceUnauthorized(f"{what} answered 401: {response.data[:300].decode(errors='replace')}",
                                     401, response.data)
        return response.raise_for_status(what)


class ConfigurationFetchFailed(Exception):
    """The offloaded configuration could not be read or is not the one announced; code says which."""

    def __init__(self, code: str, detail: str, status: int | None = None):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.status = status


MAX_CONFIGURATION_BYTES = 1024 * 1024


def fetch_configuration(url: str, expected_hash: str, ca_bundle: str | os.PathLike | None = None,
                        timeout_s: float = 30, max_bytes: int = MAX_CONFIGURATION_BYTES) -> bytes:
    """What a sensor does with desired `onboarding.configurationUrl`: GET it over HTTPS with nothing but the URL (the
    read-only SAS in its query is the only credential; twin_setup/offload.py), refuse more than max_bytes, and check
    that the SHA-256 of the bytes is `configurationHash`. Raises ConfigurationFetchFailed: `fetch_failed` (with the
    HTTP status: 403 for an expired or altered SAS, 404 for a missing blob) or `hash_mismatch`. Messages never carry
    the URL's query."""
    where = url.split("?", 1)[0]
    if not url.lower().startswith("https://"):
        raise ConfigurationFetchFailed("fetch_failed", f"{where}: not an https URL")
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    with urllib3.PoolManager(ssl_context=context, retries=False, timeout=timeout_s) as pool:
        try:
            response = pool.request("GET", url, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise ConfigurationFetchFailed("fetch_failed", f"{where}: {type(exc).__name__}") from None
        try:
            if response.status != 200:
                raise ConfigurationFetchFailed("fetch_failed", f"{where} answered {response.status}", response.status)
            data = response.read(max_bytes + 1)
        finally:
            response.release_conn()
    if len(data) > max_bytes:
        raise ConfigurationFetchFailed("fetch_failed", f"{where}: larger than {max_bytes} bytes")
    if hashlib.sha256(data).hexdigest() != expected_hash:
        raise ConfigurationFetchFailed("hash_mismatch", f"{where}: SHA-256 differs from configurationHash")
    return data


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ValueError("the certificate has no CN; pass device_id")
    return str(names[0].value)


def _certificate_refused(exc: HttpError) -> bool:
    """The hub ended the TLS handshake: it does not accept the certificate (not chaining to its roots, expired).
    A failure to verify the hub's own certificate is not that."""
    reason = getattr(exc.__cause__, "reason", None)
    if not isinstance(reason, urllib3.exceptions.SSLError):
        return False
    inner = reason.args[0] if reason.args else None
    return isinstance(inner, ssl.SSLError) and not isinstance(inner, ssl.SSLCertVerificationError)


def _load_client_certificate(context: ssl.SSLContext, certificate: x509.Certificate, private_key: Any,
                             chain: list[x509.Certificate]) -> None:
    pem = serialization.Encoding.PEM
    directory = Path(tempfile.mkdtemp(prefix="device-"))  # mkdtemp: mode 0700, readable by this user only
    try:
        cert_file, key_file = directory / "cert.pem", directory / "key.pem"
        cert_file.write_bytes(b"".join(c.public_bytes(pem) for c in [certificate, *chain]))
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(private_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        context.load_cert_chain(cert_file, key_file)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class DeviceLink:
    """One hub's device-side endpoint, shared by the simulated devices on that hub (thread-safe).

    Deprecated: it calls with a service credential, which the emulator now refuses on device routes (401), as
    IoT Hub does. Use DeviceConnection."""

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
