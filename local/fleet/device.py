"""A simulated sensor: key pair and CSR at the factory, a certificate from sign_csr, DPS registration at
power-on, then the behaviour of the reference fleet's firmware: connect to the assigned hub with its certificate
(mutual TLS, local/fleet/device_link.py), wait for desired properties, apply them, report the configuration and
the certificate, acknowledge the desired version applied. Its private key never leaves this object (the TLS
context loads it from a file that is removed at once).

Renewal, as Microsoft's "How to roll X.509 device certificates" describes it (docs/contracts.md 7.3): the sensor
answers a renewal request with a CSR for a new key, installs the certificate issued for it, and from then on
presents the new certificate. Its hub knows it by the old one and answers "unauthorized", so the sensor registers
with DPS again (same registration ID, new certificate), which updates its identity, and connects again."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from local.dps.simulator import CUSTOM_ALLOCATION_FAILED, DpsSimulator, RegistrationResult
from local.fleet.device_link import (
    ConfigurationFetchFailed,
    DeviceConnection,
    DeviceUnauthorized,
    fetch_configuration,
)

# The firmware's registration retries: Microsoft Learn "Best practices for large-scale IoT device deployments"
# (azure-docs articles/iot-dps/concepts-deploy-at-scale.md, "Retry operations": "implement an intelligent retry
# mechanism with exponential backoff"). Waits in seconds before each new attempt, jittered (half to all of it).
REGISTRATION_RETRY_S = (2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0)


def registration_transient(result: RegistrationResult) -> bool:
    """A failed registration worth trying again: DPS could not create the identity in the hub, or the webhook gave
    no final answer (none at all, or >= 429 after DPS's own retries). A device sees only DPS's code; the simulator
    reads the webhook's status too, so that a definitive refusal (a 4xx answer) is not retried for nothing."""
    if result.status != "failed":
        return False
    if result.error_code == "device_creation_failed":
        return True
    return result.error_code == CUSTOM_ALLOCATION_FAILED and (result.webhook_status is None
                                                              or result.webhook_status >= 429)


# The sections of an offloaded configuration document that the sensor applies (twin_setup/configuration.py).
CONFIG_SECTIONS = ("telemetry", "alerts", "firmware", "diagnostics")


@dataclass
class Timeline:
    manufactured: float | None = None
    powered_on: float | None = None
    assigned: float | None = None
    configured: float | None = None
    first_telemetry: float | None = None

    @property
    def power_on_to_configured_s(self) -> float | None:
        if self.powered_on is None or self.configured is None:
            return None
        return self.configured - self.powered_on

    @property
    def power_on_to_telemetry_s(self) -> float | None:
        if self.powered_on is None or self.first_telemetry is None:
            return None
        return self.first_telemetry - self.powered_on


@dataclass
class SimulatedSensor:
    device_id: str
    _key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()),
                                             repr=False)
    certificate: x509.Certificate | None = None
    chain: list[x509.Certificate] = field(default_factory=list)
    registration: RegistrationResult | None = None
    applied: dict | None = None
    timeline: Timeline = field(default_factory=Timeline)
    renewed_from: x509.Certificate | None = None
    hub_ca: str | None = None  # the file that verifies the hub's server certificate
    _next_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    _answered_request: str | None = field(default=None, repr=False)
    _connection: DeviceConnection | None = field(default=None, repr=False)
    silent: bool = False  # the demo's incident: applies its configuration, then never sends telemetry
    readings: int = 0
    registrations: int = 0  # DPS registrations made (retries of a transient failure included)
    applied_hash: str | None = None  # the configuration hash applied last
    downloads: int = 0  # offloaded configurations fetched and verified
    fetch_error: ConfigurationFetchFailed | None = None  # the last fetch that failed, until one succeeds

    @property
    def hub(self) -> str | None:
        return self.registration.assigned_hub if self.registration else None

    def connection(self) -> DeviceConnection:
        """The connection to the assigned hub with the certificate the sensor holds now (opened when first needed)."""
        if self.hub is None:
            raise RuntimeError(f"{self.device_id} is not assigned to a hub")
        if self._connection is None or self._connection.certificate != self.certificate:
            self.release()
            self._connection = DeviceConnection(self.hub, self.certificate, self._key, self.chain, self.hub_ca,
                                                device_id=self.device_id)
        return self._connection

    def release(self) -> None:
        """Close the connection (a sensor between duties holds no socket)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def csr_pem(self) -> str:
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.device_id)]))
               .sign(self._key, hashes.SHA256()))
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    def install_certificate(self, answer: dict) -> None:
        """Burn the certificate sign_csr answered into the (simulated) secure element."""
        certificate = x509.load_pem_x509_certificate(answer["certificate"].encode())
        if certificate.public_key() != self._key.public_key():
            raise ValueError("certificate is not for this device's key")
        self.certificate = certificate
        self.chain = [x509.load_pem_x509_certificate(p.encode()) for p in answer.get("caCertificates", [])]
        self.timeline.manufactured = time.monotonic()

    def register(self, dps: DpsSimulator, patience_s: float = 180) -> RegistrationResult:
        """Register with DPS as the firmware does: a failure for a transient reason is tried again with backoff
        (REGISTRATION_RETRY_S) while patience_s lasts; the last result is returned."""
        give_up = time.monotonic() + patience_s
        for wait in (0.0, *REGISTRATION_RETRY_S):
            if wait:
                if time.monotonic() + wait > give_up:
                    break
                time.sleep(wait * (0.5 + random.random() / 2))
            self.registrations += 1
            result = dps.register(self.certificate, self.chain)
            if not registration_transient(result):
                break
        return result

    def power_on(self, dps: DpsSimulator, hub_ca: str | None = None, patience_s: float = 180) -> RegistrationResult:
        if self.certificate is None:
            raise RuntimeError(f"{self.device_id} has no certificate")
        self.hub_ca = hub_ca or self.hub_ca
        self.timeline.powered_on = time.monotonic()
        self.registration = self.register(dps, patience_s)
        if self.registration.status == "assigned":
            self.timeline.assigned = time.monotonic()
        return self.registration

    def rejoin(self, dps: DpsSimulator) -> dict:
        """After installing a renewed certificate: connect with it; when the hub answers "unauthorized" (it knows
        the device by its old certificate), register with DPS again and connect; then report the certificate.
        Returns what happened: refused (the hub's 401), reprovisioned (DPS assigned it again), connected."""
        what = {"refused": False, "reprovisioned": False, "connected": False, "hub": self.hub}
        try:
            self.connection().twin()
        except DeviceUnauthorized:
            what["refused"] = True
            self.release()
            registration = self.register(dps)
            if registration.status != "assigned":
                what["error"] = registration.webhook_code or registration.error_code
                return what
            self.registration = registration
            what["reprovisioned"] = registration.reprovisioned
            what["sameHub"] = registration.assigned_hub == what["hub"]
        self.connection().report({"certificate": self.certificate_report()})
        what["connected"] = True
        return what

    def answer_renewal(self) -> str | None:
        """One look at the twin, as the firmware does when desired properties change: answer a renewal request
        with a CSR for a new key (the key stays here), or install an issued certificate for that key (from then on
        the sensor presents it: see rejoin). Returns what it did: "csr", "installed", or None."""
        link = self.connection()
        renewal = link.twin()["desired"].get("certificateRenewal") or {}
        request_id = renewal.get("requestId")
        if renewal.get("status") == "requested" and request_id and request_id != self._answered_request:
            self._next_key = ec.generate_private_key(ec.SECP256R1())
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.device_id)]))
                   .sign(self._next_key, hashes.SHA256()))
            link.report({"certificateRenewal": {
                "requestId": request_id, "csr": csr.public_bytes(serialization.Encoding.PEM).decode()}})
            self._answered_request = request_id
            return "csr"
        if renewal.get("status") == "issued" and renewal.get("certificate") and self._next_key is not None:
            certificate = x509.load_pem_x509_certificate(renewal["certificate"].encode())
            if certificate.public_key() != self._next_key.public_key():
                return None
            self.renewed_from = self.certificate
            self.certificate, self._key, self._next_key = certificate, self._next_key, None
            self.release()  # the next connection presents the new certificate
            return "installed"
        return None

    def send_reading(self) -> bool:
        """One telemetry message over IoT Hub's HTTPS device API (DeviceConnection.send_event), as the firmware sends
        at its telemetry interval once it runs its configuration; a silent sensor sends nothing. True when sent."""
        if self.silent:
            return False
        unit = ((self.applied or {}).get("telemetry") or {}).get("unit")
        self.connection().send_event({"reading": 20.0 + self.readings % 7, "unit": unit, "sequence": self.readings},
                                     properties={"messageType": "telemetry"})
        self.readings += 1
        if self.timeline.first_telemetry is None:
            self.timeline.first_telemetry = time.monotonic()
        return True

    def certificate_report(self) -> dict:
        cert = self.certificate
        return {"serialNumber": format(cert.serial_number, "X"),
                "issuer": cert.issuer.rfc4514_string(),
                "notBefore": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "notAfter": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def apply_desired(self, desired: dict, version: int) -> bool:
        """Apply a configured desired document, as the firmware does: an offloaded configuration
        (`onboarding.configurationUrl`) is fetched over HTTPS with nothing but its URL and checked against
        `configurationHash` first. A desired change that keeps the hash applied last (a renewed link) is not a new
        configuration: nothing is fetched or applied again. A failed fetch is reported (`configuration.error`) and
        False returned; the next desired version (the refresh timer's new link) is tried again."""
        onboarding = desired.get("onboarding") or {}
        config_hash = onboarding.get("configurationHash")
        if config_hash is not None and config_hash == self.applied_hash:
            return True
        applied = {k: v for k, v in desired.items() if not k.startswith("$")}
        url = onboarding.get("configurationUrl")
        link = self.connection()
        if url:
            try:
                document = json.loads(fetch_configuration(url, str(config_hash), self.hub_ca))
            except ConfigurationFetchFailed as failed:
                self.fetch_error = failed
                link.report({"configuration": {"error": {"code": failed.code, "status": failed.status,
                                                         "hash": config_hash, "desiredVersion": version,
                                                         "at": _now_iso()}}})
                return False
            self.downloads += 1
            applied.update({k: document[k] for k in CONFIG_SECTIONS if k in document})
        self.applied, self.applied_hash, self.fetch_error = applied, config_hash, None
        link.report({
            "configuration": {"hash": config_hash, "desiredVersion": version, "appliedAt": _now_iso(),
                              "error": None},
            "certificate": self.certificate_report(),
        })
        return True

    def follow_desired(self) -> bool:
        """One look at the twin (the firmware on a desired-properties change): apply what is new. True when the
        configuration the twin names is applied."""
        desired = self.connection().twin()["desired"]
        if (desired.get("onboarding") or {}).get("state") != "configured":
            return False
        return self.apply_desired(desired, desired.get("$version", 0))

    def await_configuration(self, timeout_s: float = 60) -> bool:
        """Wait for desired onboarding.state == configured, apply, report and acknowledge. False on timeout."""
        link = self.connection()
        deadline = time.monotonic() + timeout_s
        version = 0
        while time.monotonic() < deadline:
            twin = link.twin(desired_version_above=version,
                             timeout_s=max(1, int(min(30, deadline - time.monotonic()))))
            desired = twin["desired"]
            version = desired.get("$version", version)
            onboarding = desired.get("onboarding") or {}
            if onboarding.get("state") == "configured":
                if not self.apply_desired(desired, version):
                    continue  # reported the fetch failure; a renewed link arrives as a new desired version
                self.timeline.configured = time.monotonic()
                return True
            if onboarding.get("state") == "failed":
                self.applied = {"onboarding": onboarding}
                return False
        return False


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
