"""Batch issuance for manufacturing lots, and the status of a lot (docs/partners.md).

POST /api/certificates/batch (function key + partner token), body:
    {"lot": "LOT-2026-11-30-A", "csrs": [{"csr": "-----BEGIN CERTIFICATE REQUEST-----..."}, ...]}
at most MAX_BATCH CSRs and MAX_BATCH_BYTES bytes (batch_too_large, request_too_large). Each CSR goes through exactly
what a single POST /api/certificates/sign does (CertificateIssuer.issue with the partner: its scope, one active
certificate per device, one unit of its daily quota per issued certificate) and gets its own result, in the order
sent: {"index", "status": 200, ...the sign answer} or {"index", "status": 4xx/5xx, "deviceId"?, "error": {...}}. The
request itself answers 200 once it is read and the partner is known, whatever the items' outcomes. A fault (5xx) on
one CSR (Key Vault or SQL not answering) stops the batch: the CSRs after it are `not_attempted` (503), so a partner
re-sends exactly those; so does running out of BATCH_BUDGET_S (HTTP triggers are cut off after 230 s). Every issued
certificate records the lot (certificates.lot, migration 0004).

A lot name is 1-64 characters: letters, digits, '.', '_', '-', starting with a letter or digit (invalid_lot), so it
is safe in a URL path segment, a log line and a SQL parameter alike. Lots are the partner's: the status of a lot
(GET /api/certificates/lots/{lot}) lists only the caller's certificates of that lot, and a lot the partner has no
certificate in is lot_not_found, whether or not another partner used the name. Operators revoke a lot with the
revocation's {"lot": ...} selector (cert_lifecycle/revocation.py), across partners.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cert_lifecycle.authority import CertificateIssuer
from cert_lifecycle.partners import Partner
from shared.audit import AuditWriter
from shared.certificates import CertificateRegister
from shared.errors import OnboardingError
from shared.http import json_object
from shared.times import iso_utc

log = logging.getLogger(__name__)

MAX_BATCH = 100  # CSRs per request: ~100 Key Vault signatures stay well inside the HTTP trigger's 230 s
MAX_BATCH_BYTES = 2 * 1024 * 1024  # 100 CSRs of up to 16 KiB (CERT_MAX_CSR_BYTES) as JSON strings, with room
BATCH_BUDGET_S = 150.0  # then the rest is not_attempted: the answer must leave before the host's 230 s cut-off
MAX_LOT_LISTED = 10_000  # certificates listed by a lot's status (the summary counts them all)
LOT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def parse_lot(value: object) -> str:
    if not isinstance(value, str) or not LOT.fullmatch(value):
        shown = value[:70] if isinstance(value, str) else type(value).__name__
        raise OnboardingError("invalid_lot", f"lot {shown!r}")
    return value


@dataclass(frozen=True)
class BatchRequest:
    lot: str
    items: list[object]  # each {"csr": "PEM"} as sent; checked one by one, so one bad item refuses only itself


def parse_batch_request(body: bytes) -> BatchRequest:
    """The request as a whole: its size, JSON shape, the lot name and the number of CSRs; refusals of the whole
    request. The items themselves are checked at issuance, each with its own result."""
    data = json_object(body, MAX_BATCH_BYTES, '{"lot": ..., "csrs": [{"csr": PEM}, ...]}')
    unknown = sorted(set(data) - {"lot", "csrs"})
    if unknown:
        raise OnboardingError("invalid_request", f"unknown field(s): {', '.join(k[:30] for k in unknown[:5])}")
    lot = parse_lot(data.get("lot"))
    items = data.get("csrs")
    if not isinstance(items, list) or not items:
        raise OnboardingError("invalid_request", "csrs must be a non-empty list of {\"csr\": PEM}")
    if len(items) > MAX_BATCH:
        raise OnboardingError("batch_too_large", f"{len(items)} CSRs (at most {MAX_BATCH} per request)")
    return BatchRequest(lot, items)


def _csr_text(item: object) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("csr"), str) or set(item) - {"csr"}:
        raise OnboardingError("invalid_request", 'each entry of csrs is {"csr": "<PEM>"}')
    return item["csr"]


def _device_of(item: object) -> str | None:
    """The CN a refused item asked for, when it can be read at all: tells the partner which sensor it was."""
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        csr = x509.load_pem_x509_csr(_csr_text(item).encode())
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        value = names[0].value if len(names) == 1 else None
        return value[:128] if isinstance(value, str) else None
    except Exception:  # noqa: BLE001 - best effort: the error code says what was wrong
        return None


def _refused(index: int, item: object, error: OnboardingError) -> dict:
    device = _device_of(item)
    return {"index": index, "status": error.status, **({"deviceId": device} if device else {}), **error.to_body()}


@dataclass
class BatchResult:
    lot: str
    partner_id: str
    results: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        issued = sum(1 for r in self.results if r["status"] == 200)
        not_attempted = sum(1 for r in self.results if r.get("error", {}).get("code") == "not_attempted")
        return {"csrs": len(self.results), "issued": issued, "refused": len(self.results) - issued - not_attempted,
                "notAttempted": not_attempted,
                "byCode": dict(sorted(Counter(r["error"]["code"] for r in self.results if "error" in r).items()))}

    @property
    def quota_exceeded(self) -> bool:
        return any(r.get("error", {}).get("code") == "partner_quota_exceeded" for r in self.results)

    def to_body(self) -> dict:
        return {"lot": self.lot, "partnerId": self.partner_id, "summary": self.summary(), "results": self.results}


class BatchIssuer:
    def __init__(self, issuer: CertificateIssuer, audit: AuditWriter, budget_s: float = BATCH_BUDGET_S,
                 monotonic: Callable[[], float] = time.monotonic):
        self._issuer = issuer
        self._audit = audit
        self._budget_s = budget_s
        self._monotonic = monotonic

    def issue(self, request: BatchRequest, partner: Partner) -> BatchResult:
        actor = f"partner:{partner.partner_id}"
        result = BatchResult(request.lot, partner.partner_id)
        deadline = self._monotonic() + self._budget_s
        stopped: str | None = None
        for index, item in enumerate(request.items):
            if stopped is None and self._monotonic() > deadline:
                stopped = f"the batch ran out of time ({self._budget_s:.0f} s) before this CSR"
            if stopped is not None:
                result.results.append(_refused(index, item, OnboardingError("not_attempted", stopped)))
                continue
            try:
                issued = self._issuer.issue(_csr_text(item), actor=actor, partner=partner, lot=request.lot)
            except OnboardingError as error:
                self._audit.certificate_event("rejected", reason_code=error.code, actor=actor,
                                              details={"detail": error.detail, "lot": request.lot, "index": index})
                result.results.append(_refused(index, item, error))
                if error.status >= 500:
                    stopped = f"CSR {index} of the batch met {error.code}"
                continue
            except Exception:
                log.exception("batch issuance failed unexpectedly at CSR %d of lot %s", index, request.lot)
                result.results.append(_refused(index, item, OnboardingError("internal_error")))
                stopped = f"CSR {index} of the batch met internal_error"
                continue
            result.results.append({"index": index, "status": 200, **issued.to_body()})
        return result


def lot_status(register: CertificateRegister, lot: str, partner: Partner) -> dict:
    """The partner's certificates of the lot (lot_not_found when it has none): each device, serial, status and
    when it was issued, oldest first, and a count per status."""
    lot = parse_lot(lot)
    found = register.lot_certificates(lot, partner.partner_id)
    if not found:
        raise OnboardingError("lot_not_found", f"lot {lot}")
    counts = Counter(c.record.status for c in found)
    issued = [c.issued_at for c in found if c.issued_at is not None]
    return {
        "lot": lot, "partnerId": partner.partner_id,
        "summary": {"certificates": len(found), "active": counts.get("active", 0),
                    "revoked": counts.get("revoked", 0), "superseded": counts.get("superseded", 0)},
        "firstIssuedAt": iso_utc(min(issued)) if issued else None,
        "lastIssuedAt": iso_utc(max(issued)) if issued else None,
        "truncated": len(found) > MAX_LOT_LISTED,
        "certificates": [{"deviceId": c.record.device_id, "serialNumber": c.record.serial_number,
                          "issuerDn": c.record.issuer, "status": c.record.status,
                          "issuedAt": iso_utc(c.issued_at) if c.issued_at else None,
                          "notAfter": iso_utc(c.record.not_after)} for c in found[:MAX_LOT_LISTED]],
    }
