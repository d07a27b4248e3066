"""Helpers for tests that run the whole local stack (fixed ports, like `make run`)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cert_lifecycle.signer import KeyVaultSigner, key_vault_sign_digest

BASE_URL = "http://127.0.0.1:7071"
CACHE_TTL = 1.0  # seconds: the stacks tests start refresh CRL, facility and capacity caches this often


@contextmanager
def running_stack(state_dir: Path, hubs=None, extra_settings: dict[str, str] | None = None):
    """Start the whole stack on its fixed ports (skip when one is already running) and stop it afterwards."""
    import pytest

    from local.azurite import port_open
    from local.seed import data
    from local.stack import Stack, stack_ports

    hubs = hubs or list(data.HUBS)
    busy = [f"{n}:{p}" for n, p in stack_ports(hubs).items() if port_open(p)]
    if busy:
        pytest.skip(f"a local stack is already running on these ports ({', '.join(busy)}); stop it to run this test")
    ttl = str(CACHE_TTL)
    stack = Stack(state_dir=state_dir, settings_path=state_dir / "local.settings.json", hubs=hubs,
                  extra_settings={"CRL_CACHE_TTL_SECONDS": ttl, "CAPACITY_CACHE_TTL_SECONDS": ttl,
                                  "FACILITY_CACHE_TTL_SECONDS": ttl, "HEALTH_CACHE_SECONDS": ttl,
                                  **(extra_settings or {})})
    stack.start(host_to_console=False)
    _partners.clear()
    _settings_file[0] = stack.settings_path
    try:
        yield stack
    finally:
        stack.stop()


_settings_file: list[Path | None] = [None]  # of the stack running_stack started last
_partners: dict[str, str] = {}


def stack_values() -> dict[str, str]:
    assert _settings_file[0] is not None, "no stack started by running_stack"
    return json.loads(_settings_file[0].read_text())["Values"]


def new_partner(name: str = "test partner", **scope) -> tuple[str, str]:
    """A partner registered in the running stack's SQL and its Authorization value (docs/partners.md):
    (partner id, "Bearer ..."). scope: facilities, sensor_types, serial_prefix, daily_quota."""
    from local.partners import create_local_partner

    scope.setdefault("daily_quota", 1_000_000)
    return create_local_partner(stack_values(), name, **scope)


def partner_authorization() -> str:
    """The Authorization value of the running stack's default test partner (every facility and type, no prefix)."""
    if "default" not in _partners:
        _partners["default"] = new_partner("default test partner")[1]
    return _partners["default"]


def sign_headers() -> dict[str, str]:
    """What sign_csr needs besides the function key: the partner credential."""
    return {"Authorization": partner_authorization()}


@contextmanager
def app_environment(settings_path: Path):
    """The stack's app settings in os.environ for the duration (the test acts as the function app)."""
    saved = dict(os.environ)
    os.environ.update(json.loads(settings_path.read_text())["Values"])
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def http(method: str, path: str, body: dict | bytes | None = None, key: str | None = None,
         timeout: float = 30, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    url = BASE_URL + path
    if key is not None:
        url += ("&" if "?" in url else "?") + "code=" + urllib.parse.quote(key, safe="")
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else {}
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


@dataclass
class VaultCa:
    """A seeded regional CA, signing through the Key Vault emulator like the product does."""

    name: str
    signer: KeyVaultSigner

    @classmethod
    def load(cls, services, name: str) -> VaultCa:
        from azure.keyvault.keys.crypto import CryptographyClient

        cert = services.certificates.get_certificate(name)
        crypto = CryptographyClient(cert.key_id, services.credential, verify_challenge_resource=False)
        return cls(name, KeyVaultSigner(x509.load_der_x509_certificate(bytes(cert.cer)),
                                        key_vault_sign_digest(crypto)))

    @property
    def certificate(self) -> x509.Certificate:
        return self.signer.ca_certificate

    def issue(self, cn: str, days: int = 730) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        return self.signer.sign_certificate(
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))

    def crl_der(self, revoked: list[int], number: int) -> bytes:
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.certificate.subject)
                   .last_update(now - dt.timedelta(minutes=1)).next_update(now + dt.timedelta(days=7))
                   .add_extension(x509.CRLNumber(number), critical=False))
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
        return self.signer.sign_crl(builder).public_bytes(serialization.Encoding.DER)

    def publish_crl(self, services, revoked: list[int], number: int = 0) -> int:
        """Store a CRL of this CA as its blob, as the publisher would, numbered above the CRL there (the webhook
        refuses a lower number than it holds, RFC 5280 5.2.3) and at least `number`. Returns the number."""
        from azure.storage.blob import ContentSettings

        from shared.crl import crl_number

        blob = services.blob_service.get_blob_client(services.settings.crl_container, f"{self.name}.crl")
        try:
            current = crl_number(blob.download_blob().readall()) or 0
        except Exception:  # none there (or unreadable): any number goes
            current = 0
        number = max(number, current + 1, int(dt.datetime.now(dt.UTC).timestamp()))
        blob.upload_blob(self.crl_der(revoked, number), overwrite=True,
                         content_settings=ContentSettings(content_type="application/pkix-crl"))
        return number


def dps_request(cert: x509.Certificate, linked_hubs: list[str], current_hub: str | None = None) -> dict:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    context = {"registrationId": cn, "x509": {"clientCertificate": base64.b64encode(
        cert.public_bytes(serialization.Encoding.DER)).decode()}}
    if current_hub:
        context["currentIotHubHostName"] = current_hub
    return {"enrollmentGroup": {"enrollmentGroupId": "sensors", "attestation": {"type": "x509"},
                                "allocationPolicy": "custom"},
            "deviceRuntimeContext": context, "linkedHubs": linked_hubs}
