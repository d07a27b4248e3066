"""The DPS service API adapter: individual enrollments, to disallow one device of an X.509 enrollment group and to
allow it back (docs/contracts.md 7.2).

Microsoft's way to keep one device of an enrollment group out ("Disallow specific devices in an enrollment group",
azure-docs articles/iot-dps/how-to-revoke-device-access-portal.md): create a DISABLED individual enrollment for
the device, X.509 attestation with the device's signed end-entity certificate. DPS looks for an individual
enrollment matching the device before it searches the groups, so the device is refused even though an enabled
group for its CA exists; the device sees registration status "disabled" (custom allocation tutorial). For X.509
the registration ID is the certificate's subject CN, the product's device ID. Deleting that enrollment lets the
device through its group again (a re-issued device allowed back; the CRL still refuses the old certificate).

The service API (azure-rest-api-specs, specification/deviceprovisioningservices/data-plane/
DeviceProvisioningServices/stable/2021-10-01/service.json), base https://{serviceOperationsHostName}:
- `GET /enrollments/{id}`, `PUT /enrollments/{id}` (create or update; 200 + the record), `DELETE /enrollments/{id}`
  (204), PUT and DELETE with an optional `If-Match` etag; `POST /enrollments/query` {"query": "*"} paged with
  `x-ms-max-item-count` / `x-ms-continuation`; `api-version` on every call;
- IndividualEnrollment {registrationId, deviceId?, attestation {type: "x509", x509: {clientCertificates: {primary:
  {certificate}}}}, provisioningStatus enabled|disabled, etag, ...}; `certificate` is a "PEM-formatted certificate
  string" (the spec; azure-iot-sdk-csharp X509CertificateWithInfo sends BEGIN/END CERTIFICATE around base64 DER,
  the Node samples send the PEM file's text): we send PEM text. The service answers with `info` (subjectName,
  sha1Thumbprint, sha256Thumbprint, issuerName, notBeforeUtc, notAfterUtc, serialNumber, version).
- Status codes ("Troubleshooting with Azure IoT Hub DPS", common error codes): 401 token not valid, 404 enrollment
  missing, 412 etag mismatch (RFC 7232), 429 throttled, 500 internal; error body ProvisioningServiceErrorDetails
  {errorCode, trackingId, message, timestampUtc}.
- Auth: a Microsoft Entra token for https://azure-devices-provisioning.net/.default (Microsoft Learn "Control
  access to Azure IoT Hub Device Provisioning Service (DPS) by using Microsoft Entra ID"; azure-iot-deviceprovisioning
  `_patch.py`, the Java and .NET service clients use that scope), the function app's managed identity holding
  "Device Provisioning Service Data Contributor" (role id dfce44e4-17b7-4bd1-a6d1-04996ec95633, "Azure built-in
  roles"); or, for development, a shared access signature from a connection string
  (`SharedAccessSignature sr={host}&sig=...&se=...&skn={policy}`, HMAC-SHA256 with the base64-decoded key over
  `{url-encoded host}\\n{expiry}`: azure-iot-deviceprovisioning `_auth.py`).

Python has no maintained DPS service SDK (azure-iot-deviceprovisioning stopped at 1.0.0b1, 2023), so this module
speaks the REST contract through azure-core (PipelineClient, BearerTokenCredentialPolicy). Retries are the
product's one policy (shared/retry.py, docs/architecture.md "Retries"): the pipeline itself retries nothing, every
call has connection and read timeouts, and 408/429/5xx/timeouts become DpsUnavailable (a TransientError with the
service's Retry-After) retried within the caller's RetryBudget. 404 -> EnrollmentNotFound, 412 ->
PreconditionFailed, 401/403 -> DpsAccessDenied, other 4xx -> DpsRefused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from shared.config import SettingError, Settings
from shared.retry import RetryBudget, RetryPolicy, TransientError, parse_retry_after

log = logging.getLogger(__name__)

API_VERSION = "2021-10-01"
SCOPE = "https://azure-devices-provisioning.net/.default"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0
# Revocation is an operator's or a timer's call with no tight deadline: up to 4 attempts within 30 s per operation.
DEFAULT_POLICY = RetryPolicy(attempts=4, base_s=0.5, budget_s=30.0, max_backoff_s=8.0)
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Revocation reasons that mean "this device must not come back" (issue 13 item 4): every reason but superseded,
# which is the renewal's routine revocation of the old certificate of a device that stays.
DISALLOW_REASONS = frozenset({"unspecified", "keyCompromise", "cessationOfOperation", "affiliationChanged",
                              "privilegeWithdrawn"})
# Fields of an existing enrollment kept when it is disabled (everything the client may set, but the attestation).
_SETTABLE = ("deviceId", "capabilities", "iotHubHostName", "initialTwin", "reprovisionPolicy", "allocationPolicy",
             "iotHubs", "customAllocationDefinition", "optionalDeviceInformation")
_SAS_TTL_S = 3600
_SAS_RENEW_S = 300


# --- the adapter's exception vocabulary ----------------------------------------------------------------------


class DpsUnavailable(TransientError):
    """DPS throttled (429), was unavailable (5xx), timed out or could not be reached."""


class EnrollmentNotFound(Exception):
    """404: no individual enrollment for that registration ID."""


class PreconditionFailed(Exception):
    """412: the enrollment's etag changed since it was read."""


class DpsAccessDenied(Exception):
    """DPS refused our credentials or rights (401/403), or no token could be had."""


class DpsRefused(Exception):
    """A permanent refusal of one request (4xx other than 401/403/404/408/412/429)."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(f"{status} {error_code}: {message}".strip())
        self.status = status
        self.error_code = error_code
        self.message = message


def should_disallow(reason: str) -> bool:
    """Whether a revocation for this reason keeps the device out at DPS too."""
    return reason in DISALLOW_REASONS


# --- data -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateInfo:
    """X509CertificateInfo as DPS answers it."""

    subject_name: str | None
    issuer_name: str | None
    serial_number: str | None
    sha1_thumbprint: str | None
    sha256_thumbprint: str | None
    not_before: str | None
    not_after: str | None

    @classmethod
    def from_json(cls, slot: object) -> CertificateInfo | None:
        info = slot.get("info") if isinstance(slot, dict) else None
        if not isinstance(info, dict):
            return None
        return cls(info.get("subjectName"), info.get("issuerName"), info.get("serialNumber"),
                   info.get("sha1Thumbprint"), info.get("sha256Thumbprint"), info.get("notBeforeUtc"),
                   info.get("notAfterUtc"))


@dataclass(frozen=True)
class IndividualEnrollment:
    registration_id: str
    provisioning_status: str
    etag: str | None
    device_id: str | None
    attestation_type: str | None
    primary: CertificateInfo | None
    secondary: CertificateInfo | None
    created: str | None
    updated: str | None
    raw: dict = field(compare=False, repr=False)

    @classmethod
    def from_json(cls, body: dict) -> IndividualEnrollment:
        attestation = body.get("attestation") if isinstance(body.get("attestation"), dict) else {}
        client = ((attestation.get("x509") or {}).get("clientCertificates") or {}) if attestation else {}
        return cls(str(body.get("registrationId", "")), str(body.get("provisioningStatus", "enabled")),
                   body.get("etag"), body.get("deviceId"), attestation.get("type"),
                   CertificateInfo.from_json(client.get("primary")), CertificateInfo.from_json(client.get("secondary")),
                   body.get("createdDateTimeUtc"), body.get("lastUpdatedDateTimeUtc"), body)

    @property
    def disabled(self) -> bool:
        return self.provisioning_status == "disabled"

    def pins(self, certificate: x509.Certificate) -> bool:
        """Whether the enrollment's X.509 attestation holds this certificate (by SHA-256 thumbprint)."""
        wanted = _thumbprint(certificate)
        return any(info is not None and _hex(info.sha256_thumbprint) == wanted
                   for info in (self.primary, self.secondary))


@dataclass(frozen=True)
class Disallowed:
    enrollment: IndividualEnrollment
    changed: bool  # False: a disabled enrollment with this certificate was already there


@dataclass
class DisallowReport:
    """What disallow_many did: registration IDs disallowed now, already disallowed, failed (with why), and not
    attempted (the deadline passed, or DPS refused our credentials)."""

    disallowed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    not_attempted: list[str] = field(default_factory=list)


# --- certificates -----------------------------------------------------------------------------------------------


def _hex(value: str | None) -> str:
    return "".join(ch for ch in (value or "") if ch not in ": ").upper()


def _thumbprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex().upper()


def load_certificate(certificate: str | bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from PEM text, PEM or DER bytes, or as it is."""
    if isinstance(certificate, x509.Certificate):
        return certificate
    data = certificate.encode() if isinstance(certificate, str) else bytes(certificate)
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _common_name(certificate: x509.Certificate) -> str | None:
    values = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def disallow_body(registration_id: str, certificate: x509.Certificate, device_id: str | None = None,
                  current: IndividualEnrollment | None = None) -> dict:
    """The IndividualEnrollment that disallows a device: disabled, X.509 attestation with its certificate. An
    existing enrollment keeps what else it had (a gateway's own enrollment: capabilities, allocation), and its
    previous primary certificate becomes the secondary when the service sent it back and it differs."""
    body: dict = {k: current.raw[k] for k in _SETTABLE if current is not None and k in current.raw}
    certificates: dict = {"primary": {"certificate": _pem(certificate)}}
    if current is not None:
        previous = (((current.raw.get("attestation") or {}).get("x509") or {}).get("clientCertificates") or {})
        previous_pem = (previous.get("primary") or {}).get("certificate")
        if isinstance(previous_pem, str) and previous_pem.strip():
            try:
                if _thumbprint(load_certificate(previous_pem)) != _thumbprint(certificate):
                    certificates["secondary"] = {"certificate": previous_pem}
            except ValueError:
                pass  # not a certificate we can read: the new one alone
    body.update({
        "registrationId": registration_id,
        "deviceId": device_id or body.get("deviceId") or registration_id,
        "attestation": {"type": "x509", "x509": {"clientCertificates": certificates}},
        "provisioningStatus": "disabled",
    })
    if current is not None and current.etag:
        body["etag"] = current.etag
    return body


# --- authentication -------------------------------------------------------------------------------------------


def sas_token(host_name: str, policy: str, key_b64: str, ttl_s: int = _SAS_TTL_S, now: float | None = None) -> str:
    """A DPS service SAS token, built as azure-iot-deviceprovisioning `_auth.generate_sas_token` builds it."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    signed = f"{urllib.parse.quote_plus(host_name)}\n{expiry}"
    signature = base64.b64encode(hmac.new(base64.b64decode(key_b64), signed.encode(), hashlib.sha256).digest())
    return "SharedAccessSignature " + urllib.parse.urlencode(
        {"sr": host_name, "sig": signature.decode(), "se": str(expiry), "skn": policy})


def parse_connection_string(connection_string: str) -> tuple[str, str, str]:
    """(host name, policy, key) of `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`."""
    parts = {}
    for item in connection_string.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts[name.strip().lower()] = value.strip()
    missing = [k for k in ("hostname", "sharedaccesskeyname", "sharedaccesskey") if not parts.get(k)]
    if missing:
        raise ValueError(f"DPS connection string without {', '.join(missing)}")
    return parts["hostname"], parts["sharedaccesskeyname"], parts["sharedaccesskey"]


def _sas_policy(host_name: str, policy: str, key_b64: str):
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class SasPolicy(SansIOHTTPPolicy):
        """Authorization: a SAS token, renewed five minutes before it expires."""

        def __init__(self) -> None:
            super().__init__()
            self._lock = threading.Lock()
            self._token, self._expires = "", 0.0

        def on_request(self, request) -> None:
            with self._lock:
                if time.time() > self._expires - _SAS_RENEW_S:
                    self._token = sas_token(host_name, policy, key_b64)
                    self._expires = time.time() + _SAS_TTL_S
                request.http_request.headers["Authorization"] = self._token

    return SasPolicy()


# --- the client -------------------------------------------------------------------------------------------------


def _error_details(response) -> tuple[str, str]:
    code = response.headers.get("x-ms-error-code") or ""
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - an error body that is not JSON still has a status
        return code, (response.text() or "")[:200]
    if not isinstance(body, dict):
        return code, ""
    return str(body.get("errorCode") or code), str(body.get("message") or body.get("Message") or "")[:200]


class DpsEnrollments:
    """Individual enrollments of one DPS instance. Thread-safe; build once per process and reuse (one connection
    pool). Every public call takes an optional RetryBudget (a caller with a deadline passes its own); without one
    each call makes its own from `policy`."""

    def __init__(self, host_name: str, credential=None, *, sas: tuple[str, str] | None = None,
                 policy: RetryPolicy = DEFAULT_POLICY, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 read_timeout_s: float = READ_TIMEOUT_S, api_version: str = API_VERSION, transport=None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        if (credential is None) == (sas is None):
            raise ValueError("give either a token credential or a SAS (policy, key)")
        self.host_name = host_name
        self.endpoint = f"https://{host_name}"
        self.policy = policy
        self._credential = credential
        self._sas = sas
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._api_version = api_version
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._client = None
        self._client_lock = threading.Lock()

    @classmethod
    def from_connection_string(cls, connection_string: str, **kwargs) -> DpsEnrollments:
        host_name, policy, key = parse_connection_string(connection_string)
        return cls(host_name, sas=(policy, key), **kwargs)

    def budget(self, policy: RetryPolicy | None = None) -> RetryBudget:
        return RetryBudget(policy or self.policy, sleep=self._sleep, clock=self._clock)

    # -- transport ---------------------------------------------------------------------------------------------
    def _pipeline(self):
        with self._client_lock:
            if self._client is None:
                from azure.core import PipelineClient
                from azure.core.pipeline.policies import (
                    BearerTokenCredentialPolicy,
                    DistributedTracingPolicy,
                    HeadersPolicy,
                    UserAgentPolicy,
                )
                from azure.core.pipeline.policies import (
                    RetryPolicy as CoreRetryPolicy,
                )
                from azure.core.pipeline.transport import RequestsTransport

                auth = (BearerTokenCredentialPolicy(self._credential, SCOPE) if self._credential is not None
                        else _sas_policy(self.host_name, *self._sas))
                policies = [HeadersPolicy({"Accept": "application/json"}),
                            UserAgentPolicy(sdk_moniker="sensor-onboarding-dps"),
                            CoreRetryPolicy.no_retries(),  # retries are shared/retry.py's, within the caller's budget
                            auth, DistributedTracingPolicy()]
                self._client = PipelineClient(self.endpoint, policies=policies,
                                              transport=self._transport or RequestsTransport())
            return self._client

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _call(self, method: str, path: str, what: str, budget: RetryBudget | None, *, body: dict | None = None,
              headers: dict | None = None):
        from azure.core.exceptions import AzureError, ClientAuthenticationError
        from azure.core.rest import HttpRequest

        budget = budget or self.budget()
        url = f"{self.endpoint}{path}"

        def attempt():
            request = HttpRequest(method, url, params={"api-version": self._api_version}, json=body,
                                  headers=headers or {})
            # The read timeout never outlasts the budget (but leaves a second for a slow, healthy answer).
            read_timeout = min(self._read_timeout_s, max(1.0, budget.remaining_s()))
            try:
                response = self._pipeline().send_request(request, connection_timeout=self._connect_timeout_s,
                                                         read_timeout=read_timeout)
            except ClientAuthenticationError as exc:
                raise DpsAccessDenied(f"{what}: no token for {SCOPE}: {type(exc).__name__}") from exc
            except AzureError as exc:  # refused connections, timeouts, broken transfers
                raise DpsUnavailable(f"{what}: {type(exc).__name__} ({str(exc)[:120]})") from exc
            return self._checked(response, what)

        return budget.run(attempt, what)

    @staticmethod
    def _checked(response, what: str):
        status = response.status_code
        if 200 <= status < 300:
            return response
        code, message = _error_details(response)
        detail = f"{what}: HTTP {status} {code}".strip()
        if status == 404:
            raise EnrollmentNotFound(detail)
        if status == 412:
            raise PreconditionFailed(detail)
        if status in TRANSIENT_STATUSES:
            raise DpsUnavailable(detail, parse_retry_after(response.headers.get("Retry-After")))
        if status in (401, 403):
            raise DpsAccessDenied(f"{detail}: {message}")
        raise DpsRefused(status, code, message)

    @staticmethod
    def _path(registration_id: str) -> str:
        return f"/enrollments/{urllib.parse.quote(registration_id, safe='')}"

    # -- the service API -----------------------------------------------------------------------------------------
    def get(self, registration_id: str, budget: RetryBudget | None = None) -> IndividualEnrollment:
        response = self._call("GET", self._path(registration_id), f"get enrollment {registration_id}", budget)
        return IndividualEnrollment.from_json(response.json())

    def find(self, registration_id: str, budget: RetryBudget | None = None) -> IndividualEnrollment | None:
        try:
            return self.get(registration_id, budget)
        except EnrollmentNotFound:
            return None

    def create_or_update(self, registration_id: str, enrollment: dict, etag: str | None = None,
                         budget: RetryBudget | None = None) -> IndividualEnrollment:
        """PUT the enrollment; with etag, only over that version (PreconditionFailed otherwise)."""
        headers = {"If-Match": etag} if etag else {}
        response = self._call("PUT", self._path(registration_id), f"put enrollment {registration_id}", budget,
                              body=enrollment, headers=headers)
        return IndividualEnrollment.from_json(response.json())

    def delete(self, registration_id: str, etag: str | None = None, budget: RetryBudget | None = None) -> None:
        headers = {"If-Match": etag} if etag else {}
        self._call("DELETE", self._path(registration_id), f"delete enrollment {registration_id}", budget,
                   headers=headers)

    def list_enrollments(self, page_size: int = 100, budget: RetryBudget | None = None) -> list[IndividualEnrollment]:
        """Every individual enrollment (query "*", paged)."""
        budget = budget or self.budget()
        found: list[IndividualEnrollment] = []
        continuation = None
        while True:
            headers = {"x-ms-max-item-count": str(page_size)}
            if continuation:
                headers["x-ms-continuation"] = continuation
            response = self._call("POST", "/enrollments/query", "query enrollments", budget, body={"query": "*"},
                                  headers=headers)
            found += [IndividualEnrollment.from_json(item) for item in response.json() or []]
            continuation = response.headers.get("x-ms-continuation")
            if not continuation:
                return found

    # -- what the product does with it ---------------------------------------------------------------------------
    def disallow(self, registration_id: str, certificate: str | bytes | x509.Certificate, *,
                 device_id: str | None = None, budget: RetryBudget | None = None) -> Disallowed:
        """Keep the device out at DPS: a disabled individual enrollment pinning its (revoked) certificate. Idempotent
        (nothing is written when one is already there); written over the version read (If-Match), re-read and
        decided again when someone else wrote it in between."""
        cert = load_certificate(certificate)
        cn = _common_name(cert)
        if cn is None or cn.lower() != registration_id.lower():
            # For X.509 DPS takes the registration ID from the certificate's CN: another ID would block nothing.
            raise ValueError(f"certificate CN {cn!r} is not the registration ID {registration_id!r}")
        budget = budget or self.budget()
        for _ in range(3):
            current = self.find(registration_id, budget)
            if current is not None and current.disabled and current.pins(cert):
                return Disallowed(current, changed=False)
            body = disallow_body(registration_id, cert, device_id, current)
            try:
                written = self.create_or_update(registration_id, body, current.etag if current else None, budget)
            except PreconditionFailed:
                continue  # written by someone else since we read it: read and decide again
            log.info("DPS: disallowed %s (certificate serial %X)", registration_id, cert.serial_number)
            return Disallowed(written, changed=True)
        raise PreconditionFailed(f"enrollment {registration_id} kept changing while it was being disallowed")

    def allow(self, registration_id: str, budget: RetryBudget | None = None) -> bool:
        """Let the device through its enrollment group again: delete its disabled individual enrollment. True when
        one was deleted; False when there was none, or an enabled one (which blocks nothing and is not ours)."""
        budget = budget or self.budget()
        for _ in range(3):
            current = self.find(registration_id, budget)
            if current is None or not current.disabled:
                return False
            try:
                self.delete(registration_id, current.etag, budget)
            except EnrollmentNotFound:
                return False
            except PreconditionFailed:
                continue
            log.info("DPS: allowed %s back (disabled individual enrollment deleted)", registration_id)
            return True
        raise PreconditionFailed(f"enrollment {registration_id} kept changing while it was being allowed")

    def disallow_many(self, devices: Iterable[tuple[str, str | bytes | x509.Certificate]],
                      deadline_s: float = 60.0) -> DisallowReport:
        """disallow() each (registration ID, certificate) in turn within deadline_s; what the deadline leaves out is
        listed, so calling again with those continues. Stops at the first DpsAccessDenied (the rest would fail
        the same way)."""
        report = DisallowReport()
        pending = list(devices)
        deadline = self._clock() + deadline_s
        for index, (registration_id, certificate) in enumerate(pending):
            remaining = deadline - self._clock()
            if remaining <= 0:
                report.not_attempted = [r for r, _ in pending[index:]]
                break
            budget = self.budget(replace(self.policy, budget_s=min(self.policy.budget_s, remaining)))
            try:
                outcome = self.disallow(registration_id, certificate, budget=budget)
            except DpsAccessDenied as exc:
                report.failed[registration_id] = str(exc)
                report.not_attempted = [r for r, _ in pending[index + 1:]]
                break
            except (DpsUnavailable, DpsRefused, PreconditionFailed, EnrollmentNotFound, ValueError) as exc:
                report.failed[registration_id] = f"{type(exc).__name__}: {exc}"
                continue
            (report.disallowed if outcome.changed else report.unchanged).append(registration_id)
        return report


# --- settings ---------------------------------------------------------------------------------------------------


def dps_configured(settings: Settings) -> bool:
    """Whether the app is configured to manage DPS enrollments (DPS_SERVICE_HOSTNAME or DPS_CONNECTION_STRING)."""
    return bool(settings.get("DPS_SERVICE_HOSTNAME") or settings.get("DPS_CONNECTION_STRING"))


def dps_enrollments(settings: Settings, credential, **kwargs) -> DpsEnrollments:
    """The adapter from app settings: DPS_CONNECTION_STRING (development: SAS) when set, else DPS_SERVICE_HOSTNAME
    (the instance's serviceOperationsHostName, {name}.azure-devices-provisioning.net) with the app's credential."""
    connection_string = settings.get("DPS_CONNECTION_STRING")
    if connection_string:
        try:
            return DpsEnrollments.from_connection_string(connection_string, **kwargs)
        except ValueError as exc:
            raise SettingError(f"app setting DPS_CONNECTION_STRING: {exc}") from None
    host_name = settings.get("DPS_SERVICE_HOSTNAME")
    if not host_name:
        raise SettingError("app setting DPS_SERVICE_HOSTNAME is not set")
    if "://" in host_name or "/" in host_name or " " in host_name:
        raise SettingError(f"app setting DPS_SERVICE_HOSTNAME must be a host name (no scheme or path), got "
                           f"{host_name!r}")
    return DpsEnrollments(host_name, credential, **kwargs)
