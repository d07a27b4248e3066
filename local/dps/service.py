"""The DPS service API emulator: individual enrollments and enrollment groups, as the Device Provisioning Service
serves them.

Contract (azure-rest-api-specs, specification/deviceprovisioningservices/data-plane/DeviceProvisioningServices/
stable/2021-10-01/service.json, host https://{dpsName}.azure-devices-provisioning.net):
- `GET|PUT|DELETE /enrollments/{id}?api-version=...`: PUT creates or replaces (200 + the IndividualEnrollment),
  DELETE answers 204; both take an optional `If-Match` with the enrollment's etag (412 when it does not match, as
  RFC 7232 has it; troubleshooting table of "Troubleshooting with Azure IoT Hub Device Provisioning Service");
- `POST /enrollments/query` with `{"query": "*"}`, paged with `x-ms-max-item-count` / `x-ms-continuation`;
- `POST /enrollments/{id}/attestationmechanism`;
- errors: ProvisioningServiceErrorDetails `{"errorCode", "trackingId", "message", "timestampUtc"}` and the header
  `x-ms-error-code`; 401 without valid credentials, 404 for a missing enrollment, 412 for a stale etag.
- IndividualEnrollment: registrationId (case-insensitive, up to 128 characters, alphanumerics and `: . _ -`, none
  of those at either end), attestation {type: "x509", x509: {clientCertificates: {primary: {certificate: PEM}}}}
  (X509CertificateWithInfo.certificate is a "PEM-formatted certificate string"; the service answers with `info`:
  subjectName, sha1Thumbprint, sha256Thumbprint, issuerName, notBeforeUtc, notAfterUtc, serialNumber, version),
  provisioningStatus enabled|disabled (default enabled), etag, createdDateTimeUtc, lastUpdatedDateTimeUtc and the
  optional deviceId, capabilities, iotHubHostName, initialTwin, reprovisionPolicy, allocationPolicy, iotHubs,
  customAllocationDefinition, optionalDeviceInformation.

Authentication, as DPS checks it (no credentials -> 401):
- a Microsoft Entra bearer token for https://azure-devices-provisioning.net (Microsoft Learn "Control access to
  Azure IoT Hub Device Provisioning Service (DPS) by using Microsoft Entra ID"); locally the tokens of the stack's
  managed identity endpoint (local/identity.py), which stand for the app holding "Device Provisioning Service
  Data Contributor" on the instance;
- a shared access signature `SharedAccessSignature sr={host}&sig=...&se=...&skn={policy}` signed with the policy's
  key over `{url-encoded host}\\n{expiry}` (azure-iot-deviceprovisioning `_auth.py`, the same scheme as IoT Hub),
  with the stack secret `dps-provisioningserviceowner` as the key of policy provisioningserviceowner.

Enrollment groups (`GET|PUT|DELETE /enrollmentGroups/{id}` with If-Match, `POST /enrollmentGroups/query`,
`POST /enrollmentGroups/{id}/attestationmechanism`): EnrollmentGroup with attestation {type: "x509", x509:
{signingCertificates: {primary: {certificate: PEM}, secondary: {certificate: PEM}}}} (X509Attestation; each a CA
certificate), answered with `info` only as for individual enrollments; a slot given as the `info` a GET returned
keeps the certificate the group holds (see _signing_certificates). caReferences is refused (400): the emulator
keeps no CA certificates of the instance. The simulator matches devices under either signing certificate.

Not served (answered 501): registration states, bulk operations. Not known and so not
imitated: the service API's throttling figures. The six-digit errorCode values are the pattern DPS uses (e.g.
404201, reported by users); which code DPS sends for which case is not published.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.dps.store import GROUPS, EnrollmentStore, StoreConflict, StoreMissing
from local.faults import FaultEngine, engine_from_environment, install
from local.identity import verify_token
from local.iothub.auth import AuthError, verify_sas
from local.secrets import stack_secret

DPS_AUDIENCE = "https://azure-devices-provisioning.net"
OWNER_POLICY = "provisioningserviceowner"
DEFAULT_PORT = 8451
API_VERSIONS = frozenset({"2019-03-31", "2021-06-01", "2021-10-01"})
LATEST_API_VERSION = "2021-10-01"
MAX_BODY_BYTES = 1 << 20
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
REGISTRATION_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9:._-]{0,126}[A-Za-z0-9])?$")
QUERY_ALL = re.compile(r"^\s*(\*|select\s+\*\s+from\s+enrollments)\s*$", re.IGNORECASE)
PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
OPTIONAL_OBJECTS = ("initialTwin", "optionalDeviceInformation")
ALLOCATION_POLICIES = ("hashed", "geoLatency", "static", "custom")


def owner_key(state_dir: Path) -> str:
    """The key of the emulator's provisioningserviceowner policy (a stack secret, made on first use)."""
    return stack_secret(state_dir, f"dps-{OWNER_POLICY}")


def stack_connection_string(state_dir: Path, port: int = DEFAULT_PORT) -> str:
    """The emulator's service connection string, shaped like Azure's (`az iot dps connection-string show`)."""
    return f"HostName=localhost:{port};SharedAccessKeyName={OWNER_POLICY};SharedAccessKey={owner_key(state_dir)}"


class DpsError(Exception):
    def __init__(self, status: int, error_code: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> DpsError:
    return DpsError(400, 400004, message)


def not_implemented(what: str) -> DpsError:
    return DpsError(501, 501000, f"{what} is not served by the local DPS emulator")


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc_seconds(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_etag() -> str:
    return f'"{uuid.uuid4()}"'


# --- certificates ------------------------------------------------------------------------------------------


def parse_certificate(text: object, where: str) -> x509.Certificate:
    """A PEM certificate, with or without line breaks inside the base64 (azure-iot-sdk-csharp's
    X509CertificateWithInfo writes none); anything else is a 400."""
    if not isinstance(text, str):
        raise bad_request(f"{where}: a PEM-formatted certificate string is required")
    blocks = PEM_BLOCK.findall(text)
    if len(blocks) != 1:
        raise bad_request(f"{where}: exactly one PEM certificate (-----BEGIN CERTIFICATE-----) is required")
    try:
        der = base64.b64decode("".join(blocks[0].split()), validate=True)
        return x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"{where}: the certificate cannot be read: {exc}") from None


def _name(name: x509.Name) -> str:
    """Most significant RDN last, comma-space separated, as DPS shows subject and issuer names."""
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns))


def certificate_info(cert: x509.Certificate) -> dict:
    """X509CertificateInfo of a certificate."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return {
        "subjectName": _name(cert.subject),
        "sha1Thumbprint": hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 - a thumbprint, not a signature
        "sha256Thumbprint": cert.fingerprint(hashes.SHA256()).hex().upper(),
        "issuerName": _name(cert.issuer),
        "notBeforeUtc": _utc_seconds(cert.not_valid_before_utc),
        "notAfterUtc": _utc_seconds(cert.not_valid_after_utc),
        "serialNumber": format(cert.serial_number, "X"),
        "version": cert.version.value + 1,
    }


# --- validation --------------------------------------------------------------------------------------------


def check_registration_id(value: str) -> str:
    if not REGISTRATION_ID.match(value):
        raise bad_request(f"The registration ID '{value}' is invalid: up to 128 alphanumeric characters and "
                          "': . _ -', not at the start or end")
    return value


def _attestation(body: dict) -> tuple[dict, dict[str, str]]:
    """The attestation as rendered (certificate info) and the PEM certificates it carries."""
    attestation = body.get("attestation")
    if not isinstance(attestation, dict) or not isinstance(attestation.get("type"), str):
        raise bad_request("attestation with a type is required")
    kind = attestation["type"]
    if kind != "x509":
        raise bad_request(f"attestation type '{kind}' is not supported by the local DPS emulator (x509 only)")
    x509_part = attestation.get("x509")
    if not isinstance(x509_part, dict):
        raise bad_request("attestation.x509 is required for attestation type x509")
    if x509_part.get("signingCertificates") or x509_part.get("caReferences"):
        raise bad_request("an individual enrollment attests with clientCertificates, not signing certificates or "
                          "CA references")
    client = x509_part.get("clientCertificates")
    if not isinstance(client, dict) or not isinstance(client.get("primary"), dict):
        raise bad_request("attestation.x509.clientCertificates.primary is required")
    rendered: dict = {}
    pems: dict[str, str] = {}
    for slot in ("primary", "secondary"):
        entry = client.get(slot)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise bad_request(f"attestation.x509.clientCertificates.{slot} must be an object")
        cert = parse_certificate(entry.get("certificate"), f"attestation.x509.clientCertificates.{slot}.certificate")
        rendered[slot] = {"info": certificate_info(cert)}
        pems[slot] = cert.public_bytes(serialization.Encoding.PEM).decode()
    return {"type": "x509", "x509": {"clientCertificates": rendered}}, pems


def _signing_certificates(body: dict, current: dict | None) -> tuple[dict, dict[str, str]]:
    """An enrollment group's X.509 attestation (signingCertificates primary and optional secondary) as rendered,
    and the PEM certificates it carries. A slot may name a certificate the group already holds by its `info`
    alone (what a GET returned: DPS does not send certificates back), so that GET, change, PUT with If-Match
    works, e.g. adding a renewed CA as the secondary (team reading: UNCONFIRMED how DPS treats an info-only slot).
    caReferences (names of CA certificates registered with the DPS instance) are not served: the emulator keeps
    no such certificates."""
    attestation = body.get("attestation")
    if not isinstance(attestation, dict) or not isinstance(attestation.get("type"), str):
        raise bad_request("attestation with a type is required")
    if attestation["type"] != "x509":
        raise bad_request(f"attestation type '{attestation['type']}' is not supported by the local DPS emulator "
                          "(x509 only)")
    x509_part = attestation.get("x509")
    if not isinstance(x509_part, dict):
        raise bad_request("attestation.x509 is required for attestation type x509")
    if x509_part.get("clientCertificates"):
        raise bad_request("an enrollment group attests with signingCertificates or caReferences, not "
                          "clientCertificates")
    if x509_part.get("caReferences"):
        raise bad_request("attestation.x509.caReferences is not supported by the local DPS emulator (it holds no "
                          "CA certificates of the instance): use signingCertificates")
    signing = x509_part.get("signingCertificates")
    if not isinstance(signing, dict) or not isinstance(signing.get("primary"), dict):
        raise bad_request("attestation.x509.signingCertificates.primary is required")
    held: dict[str, str] = {}  # SHA-1 thumbprint -> PEM of the certificates the group holds now
    for text in ((current or {}).get("certificates") or {}).values():
        cert = x509.load_pem_x509_certificate(text.encode())
        held[certificate_info(cert)["sha1Thumbprint"]] = text
    rendered: dict = {}
    pems: dict[str, str] = {}
    for slot in ("primary", "secondary"):
        entry = signing.get(slot)
        if entry is None:
            continue
        where = f"attestation.x509.signingCertificates.{slot}"
        if not isinstance(entry, dict):
            raise bad_request(f"{where} must be an object")
        if entry.get("certificate") is None and isinstance(entry.get("info"), dict):
            kept = held.get(str(entry["info"].get("sha1Thumbprint") or "").upper())
            if kept is None:
                raise bad_request(f"{where}: a certificate is required (its info names none the group holds)")
            cert = x509.load_pem_x509_certificate(kept.encode())
        else:
            cert = parse_certificate(entry.get("certificate"), f"{where}.certificate")
        basic = next((e.value for e in cert.extensions if isinstance(e.value, x509.BasicConstraints)), None)
        if basic is None or not basic.ca:
            raise bad_request(f"{where}: a CA certificate (basicConstraints cA) is required")
        rendered[slot] = {"info": certificate_info(cert)}
        pems[slot] = cert.public_bytes(serialization.Encoding.PEM).decode()
    return {"type": "x509", "x509": {"signingCertificates": rendered}}, pems


def _optional_fields(body: dict) -> dict:
    out: dict = {}
    for name in ("deviceId", "iotHubHostName"):
        if body.get(name) is not None:
            if not isinstance(body[name], str) or not body[name] or len(body[name]) > 128:
                raise bad_request(f"{name} must be a non-empty string of at most 128 characters")
            out[name] = body[name]
    for name in OPTIONAL_OBJECTS:
        if body.get(name) is not None:
            if not isinstance(body[name], dict):
                raise bad_request(f"{name} must be an object")
            out[name] = body[name]
    capabilities = body.get("capabilities")
    if capabilities is not None:
        if not isinstance(capabilities, dict) or not isinstance(capabilities.get("iotEdge", False), bool):
            raise bad_request("capabilities.iotEdge must be true or false")
        out["capabilities"] = {"iotEdge": capabilities.get("iotEdge", False)}
    else:
        out["capabilities"] = {"iotEdge": False}
    policy = body.get("reprovisionPolicy")
    if policy is not None:
        if not isinstance(policy, dict) or not all(isinstance(policy.get(k, True), bool)
                                                   for k in ("updateHubAssignment", "migrateDeviceData")):
            raise bad_request("reprovisionPolicy.updateHubAssignment and migrateDeviceData must be true or false")
        out["reprovisionPolicy"] = {"updateHubAssignment": policy.get("updateHubAssignment", True),
                                    "migrateDeviceData": policy.get("migrateDeviceData", True)}
    else:
        out["reprovisionPolicy"] = {"updateHubAssignment": True, "migrateDeviceData": True}
    allocation = body.get("allocationPolicy")
    if allocation is not None:
        if allocation not in ALLOCATION_POLICIES:
            raise bad_request(f"allocationPolicy must be one of {', '.join(ALLOCATION_POLICIES)}")
        out["allocationPolicy"] = allocation
    hubs = body.get("iotHubs")
    if hubs is not None:
        if not isinstance(hubs, list) or not all(isinstance(h, str) and h for h in hubs):
            raise bad_request("iotHubs must be a list of IoT hub host names")
        out["iotHubs"] = list(hubs)
    custom = body.get("customAllocationDefinition")
    if custom is not None:
        if not isinstance(custom, dict) or not all(isinstance(custom.get(k), str) and custom.get(k)
                                                   for k in ("webhookUrl", "apiVersion")):
            raise bad_request("customAllocationDefinition needs webhookUrl and apiVersion")
        out["customAllocationDefinition"] = {"webhookUrl": custom["webhookUrl"], "apiVersion": custom["apiVersion"]}
    if out.get("allocationPolicy") == "custom" and "customAllocationDefinition" not in out:
        raise bad_request("allocationPolicy custom needs customAllocationDefinition")
    return out


def build_entry(path_id: str, body: dict, current: dict | None, now: dt.datetime) -> dict:
    """The stored entry for a PUT of body over current (None: a new enrollment)."""
    registration_id = body.get("registrationId")
    if not isinstance(registration_id, str):
        raise bad_request("registrationId is required")
    if registration_id.lower() != path_id.lower():
        raise bad_request(f"registrationId '{registration_id}' does not match the ID in the URL '{path_id}'")
    status = body.get("provisioningStatus", "enabled")
    if status not in ("enabled", "disabled"):
        raise bad_request("provisioningStatus must be enabled or disabled")
    attestation, pems = _attestation(body)
    created = current["record"]["createdDateTimeUtc"] if current else _utc(now)
    record = {
        "registrationId": current["record"]["registrationId"] if current else registration_id,
        "attestation": attestation,
        "provisioningStatus": status,
        **_optional_fields(body),
        "etag": new_etag(),
        "createdDateTimeUtc": created,
        "lastUpdatedDateTimeUtc": _utc(now),
    }
    return {"record": record, "certificates": pems}


GROUP_ONLY_ABSENT = ("deviceId", "optionalDeviceInformation")  # IndividualEnrollment fields an EnrollmentGroup lacks


def build_group_entry(path_id: str, body: dict, current: dict | None, now: dt.datetime) -> dict:
    """The stored entry for a PUT of an EnrollmentGroup body over current (None: a new group)."""
    group_id = body.get("enrollmentGroupId")
    if not isinstance(group_id, str):
        raise bad_request("enrollmentGroupId is required")
    if group_id.lower() != path_id.lower():
        raise bad_request(f"enrollmentGroupId '{group_id}' does not match the ID in the URL '{path_id}'")
    status = body.get("provisioningStatus", "enabled")
    if status not in ("enabled", "disabled"):
        raise bad_request("provisioningStatus must be enabled or disabled")
    attestation, pems = _signing_certificates(body, current)
    optional = {k: v for k, v in _optional_fields(body).items() if k not in GROUP_ONLY_ABSENT}
    record = {
        "enrollmentGroupId": current["record"]["enrollmentGroupId"] if current else group_id,
        "attestation": attestation,
        "provisioningStatus": status,
        **optional,
        "etag": new_etag(),
        "createdDateTimeUtc": current["record"]["createdDateTimeUtc"] if current else _utc(now),
        "lastUpdatedDateTimeUtc": _utc(now),
    }
    return {"record": record, "certificates": pems}


# --- faults (tests) ----------------------------------------------------------------------------------------


class Faults:
    """Answers a test queues for the next authenticated requests (e.g. 503 with Retry-After), before any work."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[tuple[int, str | None]] = []
        self.served = 0

    def fail_next(self, count: int = 1, status: int = 503, retry_after: str | None = None) -> None:
        with self._lock:
            self._queue.extend([(status, retry_after)] * count)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def take(self) -> tuple[int, str | None] | None:
        with self._lock:
            if not self._queue:
                return None
            self.served += 1
            return self._queue.pop(0)


# --- the ASGI app ------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    method: str
    segments: list[str]
    headers: dict[str, str]
    raw_body: bytes

    def json(self) -> object:
        if not self.raw_body.strip():
            raise bad_request("The request body is missing")
        try:
            return json.loads(self.raw_body)
        except (ValueError, RecursionError) as exc:
            raise bad_request(f"The request body is not valid JSON: {exc}") from None


class Service:
    def __init__(self, store: EnrollmentStore, now=lambda: dt.datetime.now(dt.UTC)) -> None:
        self.store = store
        self._now = now

    def get(self, ctx: Ctx, registration_id: str) -> dict:
        entry = self.store.get(check_registration_id(registration_id))
        if entry is None:
            raise _missing(registration_id)
        return entry["record"]

    def put(self, ctx: Ctx, registration_id: str) -> dict:
        check_registration_id(registration_id)
        body = ctx.json()
        if not isinstance(body, dict):
            raise bad_request("The request body must be an IndividualEnrollment object")
        build_entry(registration_id, body, None, self._now())  # validate before taking the store's lock
        try:
            entry = self.store.put(registration_id, lambda current: build_entry(registration_id, body, current,
                                                                                   self._now()),
                                   ctx.headers.get("if-match"))
        except StoreConflict as exc:
            raise _precondition(str(exc)) from None
        return entry["record"]

    def delete(self, ctx: Ctx, registration_id: str) -> None:
        try:
            self.store.delete(check_registration_id(registration_id), ctx.headers.get("if-match"))
        except StoreMissing:
            raise _missing(registration_id) from None
        except StoreConflict as exc:
            raise _precondition(str(exc)) from None

    def attestation(self, ctx: Ctx, registration_id: str) -> dict:
        return self.get(ctx, registration_id)["attestation"]

    def query(self, ctx: Ctx) -> tuple[list[dict], dict[str, str]]:
        return _page(ctx, [e["record"] for e in self.store.entries()], "enrollment")


def _page(ctx: Ctx, records: list[dict], item_type: str) -> tuple[list[dict], dict[str, str]]:
    """One page of a query for everything ('*'), as POST /enrollments/query and /enrollmentGroups/query answer."""
    body = ctx.json()
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise bad_request("A QuerySpecification {\"query\": ...} is required")
    if not QUERY_ALL.match(body["query"]):
        raise bad_request("The local DPS emulator answers only the query '*' (SELECT * FROM enrollments)")
    size_text = ctx.headers.get("x-ms-max-item-count")
    size = DEFAULT_PAGE_SIZE
    if size_text is not None:
        if not size_text.strip().isdigit() or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
            raise bad_request(f"x-ms-max-item-count must be between 1 and {MAX_PAGE_SIZE}")
        size = int(size_text)
    start = 0
    token = ctx.headers.get("x-ms-continuation")
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode())
        except (ValueError, binascii.Error):
            raise bad_request("x-ms-continuation is not a token this service issued") from None
    page = records[start:start + size]
    headers = {"x-ms-item-type": item_type, "x-ms-max-item-count": str(size)}
    if start + size < len(records):
        headers["x-ms-continuation"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
    return page, headers


class GroupService:
    """/enrollmentGroups: the same operations as /enrollments, on EnrollmentGroup records."""

    def __init__(self, store: EnrollmentStore, now=lambda: dt.datetime.now(dt.UTC)) -> None:
        self.store = store
        self._now = now

    def get(self, ctx: Ctx, group_id: str) -> dict:
        entry = self.store.get(check_registration_id(group_id), GROUPS)
        if entry is None:
            raise _group_missing(group_id)
        return entry["record"]

    def put(self, ctx: Ctx, group_id: str) -> dict:
        check_registration_id(group_id)
        body = ctx.json()
        if not isinstance(body, dict):
            raise bad_request("The request body must be an EnrollmentGroup object")
        if_match = ctx.headers.get("if-match")
        build_group_entry(group_id, body, self.store.get(group_id, GROUPS), self._now())  # validate first
        try:
            entry = self.store.put(group_id, lambda current: build_group_entry(group_id, body, current, self._now()),
                                   if_match, GROUPS)
        except StoreConflict as exc:
            raise _precondition(str(exc)) from None
        return entry["record"]

    def delete(self, ctx: Ctx, group_id: str) -> None:
        try:
            self.store.delete(check_registration_id(group_id), ctx.headers.get("if-match"), GROUPS)
        except StoreMissing:
            raise _group_missing(group_id) from None
        except StoreConflict as exc:
            raise _precondition(str(exc)) from None

    def attestation(self, ctx: Ctx, group_id: str) -> dict:
        return self.get(ctx, group_id)["attestation"]

    def query(self, ctx: Ctx) -> tuple[list[dict], dict[str, str]]:
        return _page(ctx, [e["record"] for e in self.store.entries(GROUPS)], "enrollmentGroup")


def _group_missing(group_id: str) -> DpsError:
    return DpsError(404, 404202, f"Enrollment group with ID '{group_id}' not found")


def _missing(registration_id: str) -> DpsError:
    return DpsError(404, 404201, f"Enrollment with registration ID '{registration_id}' not found")


def _precondition(detail: str) -> DpsError:
    return DpsError(412, 412002, f"Precondition failed: {detail}")


def _method_not_allowed(method: str) -> DpsError:
    return DpsError(405, 405000, f"The requested resource does not support http method '{method}'")


def route(service: Service, method: str, segments: list[str], groups: GroupService | None = None):
    """(handler, args) for a request path; DpsError for paths DPS has and this emulator does not serve."""
    head, rest = (segments[0], segments[1:]) if segments else ("", [])
    collections = {"enrollments": (service, "enrollment"),
                   "enrollmentGroups": (groups or GroupService(service.store), "enrollment group")}
    if head in collections:  # the same operations on individual enrollments and enrollment groups
        handler, what = collections[head]
        if not rest:
            if method == "POST":
                raise not_implemented(f"The bulk {what} operation")
            raise _method_not_allowed(method)
        if len(rest) == 1 and rest[0] == "query" and method == "POST":
            return handler.query, ()
        if len(rest) == 1 and rest[0]:
            handlers = {"GET": handler.get, "PUT": handler.put, "DELETE": handler.delete}
            if method not in handlers:
                raise _method_not_allowed(method)
            return handlers[method], (rest[0],)
        if len(rest) == 2 and rest[1].lower() == "attestationmechanism":
            if method != "POST":
                raise _method_not_allowed(method)
            return handler.attestation, (rest[0],)
    if head == "registrations":
        raise not_implemented(f"/{head}")
    raise DpsError(404, 404000, "The requested resource was not found")


def create_app(state_dir: Path, identity_signing_key: bytes | None, host_name: str,
               sas_policies: dict[str, str] | None = None, faults: Faults | None = None,
               fault_profile: FaultEngine | None = None) -> Starlette:
    """The emulator of one DPS instance at https://{host_name}, its enrollments under state_dir/dps.

    Bearer tokens must come from the local identity endpoint (signed with identity_signing_key) for audience
    https://azure-devices-provisioning.net; SAS tokens must be signed with a key of sas_policies for host_name.
    """
    store = EnrollmentStore(Path(state_dir))
    service, groups = Service(store), GroupService(store)
    policies = dict(sas_policies or {})

    def authenticate(request: Request) -> None:
        header = request.headers.get("authorization", "").strip()
        if not header:
            raise DpsError(401, 401002, "Unauthorized: the request has no Authorization header")
        if header.startswith("SharedAccessSignature "):
            try:
                verify_sas(header, host_name, policies)
            except AuthError as exc:
                raise DpsError(401, 401002, f"Unauthorized: {exc}") from None
            return
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise DpsError(401, 401002, "Unauthorized: unsupported Authorization scheme")
        if identity_signing_key is None:
            raise DpsError(401, 401002, "Unauthorized: this instance does not accept Microsoft Entra tokens")
        reason = verify_token(identity_signing_key, token.strip(), {DPS_AUDIENCE})
        if reason is not None:
            raise DpsError(401, 401002, f"Unauthorized: {reason} (audience {DPS_AUDIENCE} required)")

    async def read_body(request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise DpsError(413, 413000, "The request body is too large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def endpoint(request: Request) -> Response:
        try:
            authenticate(request)
            if faults is not None:
                fault = faults.take()
                if fault is not None:
                    status, retry_after = fault
                    raise DpsError(status, status * 1000, "Injected fault",
                                   {"Retry-After": retry_after} if retry_after is not None else None)
            api_version = request.query_params.get("api-version")
            if not api_version:
                raise bad_request("The api-version query parameter is required")
            if api_version not in API_VERSIONS:
                raise bad_request(f"The api-version '{api_version}' is not supported; the latest is "
                                  f"{LATEST_API_VERSION}")
            segments = [s for s in request.url.path.split("/") if s]
            handler, args = route(service, request.method, segments, groups)
            body = await read_body(request) if request.method in ("PUT", "POST") else b""
            ctx = Ctx(request.method, segments, {k.lower(): v for k, v in request.headers.items()}, body)
            result = await run_in_threadpool(handler, ctx, *args)
        except DpsError as err:
            return error_response(err)
        if result is None:
            return Response(status_code=204, headers=_common_headers())
        if isinstance(result, tuple):
            page, headers = result
            return reply(page, headers=headers)
        return reply(result)

    methods = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]
    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])
    # A fault profile (local/faults.py): fault_profile, or the one LOCAL_FAULT_PROFILE names; none by default.
    return install(app, fault_profile if fault_profile is not None else engine_from_environment("dps"))


def _common_headers() -> dict[str, str]:
    return {"x-ms-request-id": str(uuid.uuid4())}


def error_response(err: DpsError) -> JSONResponse:
    body = {"errorCode": err.error_code, "trackingId": str(uuid.uuid4()), "message": err.message,
            "timestampUtc": _utc(dt.datetime.now(dt.UTC))}
    headers = {**_common_headers(), "x-ms-error-code": str(err.error_code), **err.headers}
    return JSONResponse(body, err.status, headers=headers)


def reply(body: object, status: int = 200, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status, headers={**_common_headers(), **(headers or {})})
