"""The error catalogue: stable codes, each with an HTTP status and a message.

Refusals are 4xx (the device or its data is the problem), faults 5xx; a refusal that may succeed later
(crl_unavailable) is a 503, the status DPS retries (docs/contracts.md 1.3). Every rejection carries a code; logs,
audit rows and telemetry use the same code, so the dashboard and alert rules in infra/ can group by it. Codes
are part of the product's contract: add, never rename.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    message: str


_CATALOGUE = [
    # request shape
    ErrorCode("invalid_request", 400, "The request body is not the expected JSON document."),
    ErrorCode("invalid_registration_id", 400, "Registration ID is not sensor-{type}-{facility}-{serial}."),
    ErrorCode("unknown_sensor_type", 400, "The sensor type code in the registration ID is not known."),
    ErrorCode("registration_id_mismatch", 400, "The certificate CN and the registration ID differ."),
    ErrorCode("attestation_not_supported", 400, "Only X.509 attestation is accepted."),
    ErrorCode("certificate_missing", 400, "No certificate details and none issued on record."),
    ErrorCode("certificate_invalid", 400, "The device certificate could not be read."),
    ErrorCode("certificate_ambiguous", 409,
              "No certificate details, and more than one active certificate on record: which one is presented?"),
    # trust
    ErrorCode("unknown_issuer", 403, "The certificate was not issued by a configured regional CA."),
    ErrorCode("certificate_revoked", 403, "The device certificate is revoked."),
    ErrorCode("revoked_certificate_outstanding", 403,
              "No certificate details, and the device has a certificate revoked for cause that has not expired."),
    ErrorCode("superseded_certificate_outstanding", 403,
              "No certificate details, and the device has a superseded certificate that has not expired."),
    # 503, not 403: the CA's CRL or certificate may be readable again in a minute, and DPS retries only >= 429
    # (docs/contracts.md 1.3); still fail closed, the device is not allocated meanwhile.
    ErrorCode("crl_unavailable", 503, "No valid CRL for the issuing CA; refusing (fail closed), retry later."),
    # data
    ErrorCode("unknown_facility", 404, "The facility code is not known."),
    ErrorCode("facility_inactive", 403, "The facility is not active."),
    ErrorCode("no_hub_capacity", 409, "No linked IoT hub can take the device."),
    # platform
    ErrorCode("dependency_unavailable", 503, "A backing service did not answer; retry later."),
    ErrorCode("configuration_error", 500, "The function app is misconfigured."),
    ErrorCode("internal_error", 500, "Unexpected error."),
    # twin setup (DeviceCreated -> twin desired properties)
    ErrorCode("unknown_template", 404, "No configuration template exists for the sensor type."),
    ErrorCode("invalid_template", 422, "The configuration template is not a valid template."),
    ErrorCode("invalid_override", 422, "A facility override is not valid or makes the configuration invalid."),
    ErrorCode("configuration_too_large", 413, "The configuration does not fit the twin, even as a pointer."),
    ErrorCode("edge_capability_mismatch", 409, "The template has an edge deployment but the device is not IoT Edge."),
    ErrorCode("twin_update_rejected", 502, "IoT Hub refused the twin update."),
    ErrorCode("edge_deployment_failed", 502, "IoT Hub refused the edge deployment."),
    # configuration rollouts (template and override changes reaching installed sensors)
    ErrorCode("rollout_not_found", 404, "No such configuration rollout."),
    ErrorCode("rollout_state_conflict", 409, "The rollout is not in a state that allows this operation."),
    ErrorCode("configuration_drift", 409, "Installed sensors differ from template (+) overrides today."),
    # certificate lifecycle (CSR signing, revocation, CRLs)
    ErrorCode("request_too_large", 413, "The request body is too large."),
    ErrorCode("csr_invalid", 400, "The body is not a PEM certificate signing request."),
    ErrorCode("csr_signature_invalid", 400, "The CSR's signature does not verify (no proof of possession)."),
    ErrorCode("csr_subject_mismatch", 400, "The CSR's CN is not the device's ID."),
    ErrorCode("weak_key", 400, "Key not allowed: EC P-256 or P-384, or RSA of at least 2048 bits."),
    ErrorCode("invalid_serial_number", 400, "The serial number is not 1 to 40 hexadecimal digits."),
    ErrorCode("invalid_revocation_reason", 400, "The revocation reason is not one the CA accepts."),
    ErrorCode("unknown_ca", 404, "The issuer is not a configured regional CA."),
    ErrorCode("certificate_not_found", 404, "No active certificate on record matches."),
    ErrorCode("superseded_not_on_record", 409,
              "Only a certificate this product issued to the device can be revoked as superseded."),
    ErrorCode("too_many_certificates", 413, "One revocation call names or matches too many certificates; split it."),
    ErrorCode("revocation_not_published", 503,
              "The revocation is recorded but its CRL could not be published; the CRL refresh will publish it."),
    ErrorCode("confirmation_required", 428, "Nothing was revoked (a dry run); confirm with --yes."),
    ErrorCode("signing_failed", 502, "Key Vault did not produce a valid signature; nothing was issued."),
    # issuance for manufacturing partners (docs/partners.md)
    ErrorCode("partner_credential_required", 401,
              "A partner credential is required: Authorization: Bearer <token> besides the function key."),
    ErrorCode("partner_credential_invalid", 401,
              "The partner credential is not valid (signature, issuer, audience or expiry)."),
    ErrorCode("partner_not_authorized", 403,
              "The caller is not an active manufacturing partner (no partner app role, unknown or disabled)."),
    ErrorCode("certificate_exists", 409,
              "The device already holds an active certificate; only an operator re-issue replaces it."),
    ErrorCode("facility_not_allowed", 403, "The partner may not request certificates for this facility."),
    ErrorCode("sensor_type_not_allowed", 403, "The partner may not request certificates for this sensor type."),
    ErrorCode("serial_not_allowed", 403, "The device serial is outside the partner's serial range."),
    ErrorCode("partner_quota_exceeded", 429, "The partner's daily certificate quota is used up; see Retry-After."),
    # batch issuance and manufacturing lots (docs/partners.md)
    ErrorCode("invalid_lot", 400, "The lot name is not 1 to 64 letters, digits, '.', '_' or '-' (starting with a "
                                  "letter or digit)."),
    ErrorCode("batch_too_large", 413, "The batch holds more CSRs than one request may carry; send the lot in several "
                                      "batches."),
    ErrorCode("lot_not_found", 404, "No certificate on record for this lot (of this partner)."),
    ErrorCode("not_attempted", 503, "This CSR of the batch was not attempted (an earlier one met an outage, or the "
                                    "batch ran out of time); send it again."),
    # No longer raised: CRLs live in Blob Storage, with no size cap (docs/architecture.md 5). Kept: codes are never
    # removed, and audit rows and dashboards may still carry it.
    ErrorCode("crl_too_large", 500, "The CRL exceeds what its Key Vault secret can hold."),
]

CATALOGUE: dict[str, ErrorCode] = {e.code: e for e in _CATALOGUE}


class OnboardingError(Exception):
    """A rejection with a catalogue code; detail is safe to log and to return (no secrets)."""

    def __init__(self, code: str, detail: str | None = None):
        if code not in CATALOGUE:
            raise ValueError(f"unknown error code {code!r}")
        self.error = CATALOGUE[code]
        self.detail = detail
        super().__init__(f"{code}: {detail or self.error.message}")

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def status(self) -> int:
        return self.error.status

    def to_body(self) -> dict:
        """The JSON body of a refusal: {"error": {"code", "message", "detail"?}}."""
        error = {"code": self.code, "message": self.error.message}
        if self.detail:
            error["detail"] = self.detail
        return {"error": error}
