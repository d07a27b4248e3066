"""The DPS custom allocation webhook: parse -> decide -> answer, audit, telemetry. The trigger is
allocation/functions.py; the contract is docs/contracts.md 1."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import azure.functions as func

from allocation.decision import Allocation, decide
from allocation.request import AllocationRequest, parse_allocation_request
from allocation.response import allocation_response
from allocation.wiring import allocation_context, audit_trail, deadline_budget
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
# The decision and the audit row run here, so that the invocation answers by ALLOCATION_DEADLINE_SECONDS whatever
# a dependency does (allocation/wiring.py DeadlineBudget): what has not finished by then goes on in the background
# (each call has its own timeout) while DPS gets a 503 with Retry-After, fail-closed. When every thread is held by a
# hung dependency, new requests wait in the queue and get the same 503 at their deadline.
WORKERS = 32
_pool: ThreadPoolExecutor | None = None
_pool_guard = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_guard:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="allocation")
        return _pool


def _within(future: Future, until: float):
    """future's result, or raise FutureTimeout at the perf_counter time `until`."""
    return future.result(timeout=max(0.0, until - time.perf_counter()))


def _audit(registration_id: str, outcome: str, reason_code: str | None, hub: str | None, details: dict,
           until: float, write: Callable[[], bool] | None = None) -> None:
    """The audit row (or `write`, which writes it and more), written by `until` or left to finish in the
    background; telemetry says when it was not written (SQL down or slow), so the reason code of a refusal is
    never lost silently."""
    audit = audit_trail()
    future = _executor().submit(write or (lambda: audit.record(registration_id, outcome, reason_code, hub, details)))
    try:
        written = _within(future, until)
    except FutureTimeout:
        written = None
    if written is not True:
        log.error("audit row of %s (%s %s) %s", registration_id, outcome, reason_code or "",
                  "not written in time; still trying" if written is None else "not written")
        telemetry.emit("audit_unwritten", outcome=outcome, reasonCode=reason_code, registrationId=registration_id,
                       late=written is None)


def _refuse(error: OnboardingError, request: AllocationRequest | None, started: float,
            until: float) -> func.HttpResponse:
    registration_id = request.registration_id if request else "(unparsed)"
    duration_ms = (time.perf_counter() - started) * 1000
    _audit(registration_id, "rejected", error.code, None, {"detail": error.detail, "durationMs": duration_ms}, until)
    if error.code in SECURITY_ALERT_CODES and request is not None:
        alert = _executor().submit(audit_trail().security_alert, {
            "type": "revokedCertificatePresented", "reasonCode": error.code, "registrationId": registration_id,
            "facility": request.identity.facility, "detail": error.detail,
            "at": times.iso_utc(times.utc_now()),
        })
        try:
            _within(alert, until)
        except FutureTimeout:
            log.error("security alert for %s not queued in time; still trying", registration_id)
    telemetry.emit("allocation", duration_ms, outcome="rejected", reasonCode=error.code,
                   registrationId=registration_id, facility=request.identity.facility if request else None)
    response = json_response(error.to_body(), error.status)
    if error.status in RETRIED_STATUSES:
        # DPS retries an answer of 429 or more (docs/contracts.md 1.3); Retry-After tells any other caller when.
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _allocated(allocation: Allocation, started: float, until: float) -> func.HttpResponse:
    body = allocation_response(allocation, times.utc_now())
    choice = allocation.choice
    duration_ms = (time.perf_counter() - started) * 1000
    request, cert = allocation.request, allocation.certificate
    details = {
        "rule": choice.rule, "crossRegion": choice.cross_region, "utilisation": round(choice.utilisation, 4),
        "issuer": allocation.ca.name, "serialNumber": cert.serial_hex,
        "certificateSource": allocation.certificate_source, "durationMs": round(duration_ms, 2),
        "reprovisioning": request.current_hub is not None, "twinKept": "initialTwin" not in body,
    }
    # Only a certificate DPS presented proves which one the device provisioned with (a register stand-in does not).
    presented = (cert.issuer, cert.serial_hex) if allocation.certificate_source == "dps" else None
    _audit(request.registration_id, "allocated", None, choice.host_name, details, until,
           write=lambda: audit_trail().allocated(request.registration_id, choice.host_name, details, presented,
                                                 times.utc_now()))
    telemetry.emit("allocation", duration_ms, outcome="allocated", registrationId=allocation.request.registration_id,
                   facility=allocation.facility.code, hub=choice.host_name, rule=choice.rule,
                   crossRegion=choice.cross_region, certificateValidationMs=round(allocation.validation_ms, 3))
    return json_response(body, 200)


def _decide(request: AllocationRequest) -> Allocation:
    context = allocation_context()
    return decide(request, context, reserve=context.capacity.reserve)


def allocate(req: func.HttpRequest) -> func.HttpResponse:
    started = time.perf_counter()
    budget = deadline_budget()
    answer_by, decide_by = started + budget.answer_s, started + budget.decide_s
    request = None
    try:
        request = parse_allocation_request(req.get_body())
        allocation = _within(_executor().submit(_decide, request), decide_by)
    except OnboardingError as error:
        return _refuse(error, request, started, answer_by)
    except FutureTimeout:
        # Not decided in time: a dependency is slow or hung. Fail closed with a status DPS retries. A place the
        # decision may still take on a hub is counted (the hub looks fuller than it is, never emptier).
        log.warning("allocation of %s not decided within %.1fs", request.registration_id, budget.decide_s)
        return _refuse(OnboardingError("dependency_unavailable", f"not decided within the {budget.deadline_s:g}s "
                                       f"deadline (a dependency is slow)"), request, started, answer_by)
    except Exception:
        log.exception("allocation failed unexpectedly")
        return _refuse(OnboardingError("internal_error"), request, started, answer_by)
    return _allocated(allocation, started, answer_by)
