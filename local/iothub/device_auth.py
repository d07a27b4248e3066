"""Who may act as a device: the device itself, by the credential its registry identity names. Pure, no I/O.

IoT Hub authenticates a device by its identity's `authentication.type` (service API Device model):
- `selfSigned` (X.509 thumbprint): the client certificate presented in the TLS handshake must have the
  identity's `x509Thumbprint.primaryThumbprint` or `secondaryThumbprint` (SHA-1 hex; SHA-256 also accepted, as
  the registry stores either; case-insensitive). Devices that DPS registers with an X.509 attestation look like
  this (azure-docs issues 70976 and 108289), and DPS updates the thumbprint when the device re-provisions with
  a new certificate (docs/contracts.md 7.3). Source: Microsoft Learn "Authenticate identities with X.509
  certificates" (https://learn.microsoft.com/azure/iot-hub/authenticate-authorize-x509) and "Tutorial: Create
  and upload self-signed certificates for testing" (https://learn.microsoft.com/azure/iot-hub/tutorial-x509-self-sign).
- `certificateAuthority` (X.509 CA): the certificate chains to a trusted CA (checked during the TLS handshake
  against the device PKI's roots, local/serve.py) and its subject CN is the device ID (same source).
- `sas`: a SAS token scoped to the device (`sr={host}/devices/{id}`, no `skn`), signed with one of its keys.
- `none`: no device credential.
A shared access policy or a Microsoft Entra token authorises service operations, never device ones: IoT Hub has
no way for a back-end credential to act as a device, so the device-side routes refuse it. A device that is
not registered, or whose status is `disabled`, is refused the same way: 401 IotHubUnauthorizedAccess.

The emulator verifies a presented chain during the handshake, so a certificate from an unknown CA ends the
TLS connection instead of answering 401 (IoT Hub accepts any certificate at TLS and then matches thumbprints;
this product's devices always chain to its root).
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from local.iothub import auth as au
from local.iothub.devices import device_keys


@lru_cache(maxsize=8192)
def _fingerprints(pem: str) -> tuple[str, str, str | None]:
    """(SHA-1 hex, SHA-256 hex, subject CN) of a PEM certificate; cached: a device presents the same one."""
    der = ssl.PEM_cert_to_DER_cert(pem)
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = names[0].value if names else None
    return hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper(), cn  # noqa: S324


def thumbprint(pem: str) -> str:
    """The certificate's SHA-1 thumbprint as IoT Hub shows it (upper-case hex)."""
    return _fingerprints(pem)[0]


def client_certificate(scope: Mapping[str, Any]) -> str | None:
    """The leaf certificate (PEM) the client presented, from the ASGI TLS extension; None when there is none."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    return chain[0] if chain else None


def authenticate_device(
    device_id: str,
    record: Mapping[str, Any] | None,
    certificate: str | None,
    authorization: str | None,
    host_name: str,
) -> None:
    """Raise au.AuthError unless the caller is device_id, by the credential its identity names."""
    if record is None:
        raise au.AuthError(f"device '{device_id}' is not registered on this hub")
    device = record["device"]
    if device.get("status") != "enabled":
        raise au.AuthError(f"device '{device_id}' is disabled")
    authentication = device.get("authentication") or {}
    kind = authentication.get("type")
    if kind in ("selfSigned", "certificateAuthority"):
        if certificate is None:
            raise au.AuthError(f"device '{device_id}' authenticates with an X.509 certificate and presented none")
        sha1, sha256, cn = _fingerprints(certificate)
        if kind == "selfSigned":
            prints = authentication.get("x509Thumbprint") or {}
            known = {str(p).upper() for p in (prints.get("primaryThumbprint"), prints.get("secondaryThumbprint")) if p}
            if sha1 not in known and sha256 not in known:
                raise au.AuthError(f"the certificate's thumbprint {sha1} is not one of device '{device_id}'")
        elif cn != device_id:
            raise au.AuthError(f"the certificate's CN '{cn}' is not the device ID '{device_id}'")
        return
    if kind == "sas":
        if not authorization or not authorization.startswith("SharedAccessSignature "):
            raise au.AuthError(f"device '{device_id}' authenticates with a SAS token and sent none")
        if au.parse_sas(authorization).get("skn") is not None:
            raise au.AuthError("a shared access policy cannot act as a device")
        keys = device_keys(device)
        principal = au.verify_sas(authorization, host_name, {}, lambda name: keys if name == device_id else [])
        if principal.name != device_id:
            raise au.AuthError(f"the token is scoped to device '{principal.name}', not '{device_id}'")
        return
    raise au.AuthError(f"device '{device_id}' has no device credential (authentication type {kind})")
