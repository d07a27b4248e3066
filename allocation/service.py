"""The DPS custom allocation webhook: parse -> decide -> answer, audit, telemetry. The trigger is
allocation/functions.py; the contract is docs/contracts.md 1."""

from __future__ import annotations

import datetime as dt
import logging
import time

import azure.functions as func

from allocation.decision import Allocation, decide
from allocation.request import AllocationRequest, parse_allocation_request
from allocation.response import allocation_response
from allocation.wiring import allocation_context, audit_trail
from shared import telemetry, times
from shared.errors import OnboardingError
from shared.http import json_response

log = logging.getLogger(__name__)
# Refusals the security team hears about: a revoked certificate presented, or one still outstanding.
SECURITY_ALERT_CODES = frozenset({"certificate_revoked", "revoked_certificate_outstanding"})
# What may succeed later (crl_unavailable, dependency_unavailable, throttling) is answered with a status DPS retries
# (429 or above: up to 10 times, 1 s then growing by 9 s, docs/contracts.md 1.3) and says when to come back. 5 s is
# about DPS's own first interval and the time a failed CRL or Key Vault read is remembered (allocation/trust.py).
RETRIED_STATUSES = frozenset({429, 503})
RETRY_AFTER_S = 5


def _refuse(error: OnboardingError, request: AllocationRequest | None, started: float) -> func.HttpResponse:
    registration_id = request.registration_id if request else "(unparsed)"
    duration_ms = (time.perf_counter() - started) * 1000
    audit = audit_trail()
    audit.record(registration_id, "rejected", error.code, None, {"detail": error.detail, "durationMs": duration_ms})
    if error.code in SECURITY_ALERT_CODES and request is not None:
        audit.security_alert({
            "type": "revokedCertificatePresented", "reasonCode": error.code, "registrationId": registration_id,
            "facility": request.identity.facility, "detail": error.detail,
            "at": times.iso_utc(times.utc_now()),
        })
    telemetry.emit("allocation", duration_ms, outcome="rejected", reasonCode=error.code,
                   registrationId=registration_id, facility=request.identity.facility if request else None)
    response = json_response(error.to_body(), error.status)
    if error.status in RETRIED_STATUSES:
        # DPS retries an answer of 429 or more (docs/contracts.md 1.3); Retry-After tells any other caller when.
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _allocated(allocation: Allocation, started: float) -> func.HttpResponse:
    now = dt.datetime.now(dt.UTC)
    body = allocation_response(allocation, now)
    choice = allocation.choice
    duration_ms = (time.perf_counter() - started) * 1000
    audit_trail().record(allocation.request.registration_id, "allocated", None, choice.host_name, {
        "rule": choice.rule, "crossRegion": choice.cross_region, "utilisation": round(choice.utilisation, 4),
        "issuer": allocation.ca.name, "serialNumber": allocation.certificate.serial_hex,
        "certificateSource": allocation.certificate_source, "durationMs": round(duration_ms, 2),
    })
    telemetry.emit("allocation", duration_ms, outcome="allocated", registrationId=allocation.request.registration_id,
                   facility=allocation.facility.code, hub=choice.host_name, rule=choice.rule,
                   crossRegion=choice.cross_region)
    return json_response(body, 200)


def allocate(req: func.HttpRequest) -> func.HttpResponse:
    started = time.perf_counter()
    request = None
    try:
        request = parse_allocation_request(req.get_body())
        context = allocation_context()
        allocation = decide(request, context, reserve=context.capacity.reserve)
    except OnboardingError as error:
        return _refuse(error, request, started)
    except Exception:
        log.exception("allocation failed unexpectedly")
        return _refuse(OnboardingError("internal_error"), request, started)
    return _allocated(allocation, started)
