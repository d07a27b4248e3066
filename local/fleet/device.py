"""A simulated sensor: key pair and CSR at the factory, a certificate from sign_csr, DPS registration at
power-on, then the behaviour of the reference fleet's firmware: wait for desired properties, apply them,
report the configuration and the certificate, acknowledge the desired version applied. Its private key
never leaves this object."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from local.dps.simulator import DpsSimulator, RegistrationResult
from local.fleet.device_link import DeviceLink


@dataclass
class Timeline:
    manufactured: float | None = None
    powered_on: float | None = None
    assigned: float | None = None
    configured: float | None = None

    @property
    def power_on_to_configured_s(self) -> float | None:
        if self.powered_on is None or self.configured is None:
            return None
        return self.configured - self.powered_on


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
    _next_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    _answered_request: str | None = field(default=None, repr=False)

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

    def power_on(self, dps: DpsSimulator) -> RegistrationResult:
        if self.certificate is None:
            raise RuntimeError(f"{self.device_id} has no certificate")
        self.timeline.powered_on = time.monotonic()
        self.registration = dps.register(self.certificate, self.chain)
        if self.registration.status == "assigned":
            self.timeline.assigned = time.monotonic()
        return self.registration

    def answer_renewal(self, link: DeviceLink) -> str | None:
        """One look at the twin, as the firmware does when desired properties change: answer a renewal request
        with a CSR for a new key (the key stays here), or install an issued certificate for that key.
        Returns what it did: "csr", "installed", or None."""
        renewal = link.twin(self.device_id)["desired"].get("certificateRenewal") or {}
        request_id = renewal.get("requestId")
        if renewal.get("status") == "requested" and request_id and request_id != self._answered_request:
            self._next_key = ec.generate_private_key(ec.SECP256R1())
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.device_id)]))
                   .sign(self._next_key, hashes.SHA256()))
            link.report(self.device_id, {"certificateRenewal": {
                "requestId": request_id, "csr": csr.public_bytes(serialization.Encoding.PEM).decode()}})
            self._answered_request = request_id
            return "csr"
        if renewal.get("status") == "issued" and renewal.get("certificate") and self._next_key is not None:
            certificate = x509.load_pem_x509_certificate(renewal["certificate"].encode())
            if certificate.public_key() != self._next_key.public_key():
                return None
            self.renewed_from = self.certificate
            self.certificate, self._key, self._next_key = certificate, self._next_key, None
            link.report(self.device_id, {"certificate": self.certificate_report()})
            return "installed"
        return None

    def certificate_report(self) -> dict:
        cert = self.certificate
        return {"serialNumber": format(cert.serial_number, "X"),
                "issuer": cert.issuer.rfc4514_string(),
                "notBefore": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "notAfter": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def await_configuration(self, link: DeviceLink, timeout_s: float = 60) -> bool:
        """Wait for desired onboarding.state == configured, apply, report and acknowledge. False on timeout."""
        deadline = time.monotonic() + timeout_s
        version = 0
        while time.monotonic() < deadline:
            twin = link.twin(self.device_id, desired_version_above=version,
                             timeout_s=max(1, int(min(30, deadline - time.monotonic()))))
            desired = twin["desired"]
            version = desired.get("$version", version)
            onboarding = desired.get("onboarding") or {}
            if onboarding.get("state") == "configured":
                self.applied = {k: v for k, v in desired.items() if not k.startswith("$")}
                link.report(self.device_id, {
                    "configuration": {"hash": onboarding.get("configurationHash"), "desiredVersion": version,
                                      "appliedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
                    "certificate": self.certificate_report(),
                })
                self.timeline.configured = time.monotonic()
                return True
            if onboarding.get("state") == "failed":
                self.applied = {"onboarding": onboarding}
                return False
        return False
