"""The certificate lifecycle's functions. Thin: parse -> logic (cert_lifecycle modules) -> answer.

| function | trigger | |
|---|---|---|
| sign_csr | POST /api/certificates/sign (function key + partner) | PEM CSR (raw or {"csr": ...}) -> certificate |
| revoke_certificate | POST /api/certificates/revoke (admin key) | one or many: rows, one CRL per CA, alerts |
| refresh_crls | timer, every 6 hours | re-issues each CA's CRL before nextUpdate or when SQL has more |
| scan_expiring_certificates | timer, daily 06:00 UTC | expiry scan -> renewal queue, digests, tags |
| process_renewal | queue certificate-renewals | asks the device for a CSR (desired properties) |
| collect_renewal_csrs | timer, hourly at :05 | signs answered CSRs, completes renewals, revokes superseded |
"""

from __future__ import annotations

import json
import logging
import time

import azure.functions as func

from cert_lifecycle.settings import RENEWAL_QUEUE
from shared import telemetry
from shared.config import SettingError
from shared.errors import OnboardingError
from shared.http import json_response
from shared.times import iso_utc

log = logging.getLogger(__name__)
bp = func.Blueprint()

SCAN_SCHEDULE = "0 0 6 * * *"
CRL_REFRESH_SCHEDULE = "0 0 */6 * * *"
COLLECT_SCHEDULE = "0 5 * * * *"


def lifecycle():
    """The lifecycle services, built on first use. Imported here, not at module level, because the host imports
    function_app on every cold start to index the functions, and none of this is needed for that."""
    from cert_lifecycle import wiring

    return wiring.lifecycle()


def _refusal(error: OnboardingError, event: str, started: float, **fields) -> func.HttpResponse:
    duration_ms = (time.perf_counter() - started) * 1000
    telemetry.emit(event, duration_ms, outcome="rejected", reasonCode=error.code, **fields)
    if error.status >= 500:
        log.error("%s failed: %s", event, error)
    response = json_response(error.to_body(), error.status)
    if error.code == "partner_quota_exceeded":  # the quota is per UTC day: retry when the next one starts
        from cert_lifecycle.partners import seconds_to_next_day

        response.headers["Retry-After"] = str(seconds_to_next_day())
    elif error.status == 401:  # RFC 6750: a bearer token is what is missing or wrong
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' \
            if error.code == "partner_credential_invalid" else "Bearer"
    return response


@bp.function_name("sign_csr")
@bp.route(route="certificates/sign", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def sign_csr(req: func.HttpRequest) -> func.HttpResponse:
    started = time.perf_counter()
    try:
        lc = lifecycle()
        max_bytes = lc.settings.max_csr_bytes
    except SettingError as exc:
        return _refusal(OnboardingError("configuration_error", str(exc)), "certificate_signing", started)
    actor = "sign_csr"  # until the partner is known
    try:
        from cert_lifecycle.csr import csr_from_body

        # The function key got the request this far; the partner credential says who is asking (docs/partners.md).
        partner = lc.partner_auth.partner(req.headers.get("Authorization"))
        actor = f"partner:{partner.partner_id}"
        csr = csr_from_body(req.get_body(), max_bytes)
        issued = lc.issuer.issue(csr, actor=actor, partner=partner)
    except OnboardingError as error:
        lc.audit.certificate_event("rejected", reason_code=error.code, actor=actor,
                                   details={"detail": error.detail})
        return _refusal(error, "certificate_signing", started)
    except SettingError as exc:
        return _refusal(OnboardingError("configuration_error", str(exc)), "certificate_signing", started)
    except Exception:
        log.exception("sign_csr failed unexpectedly")
        return _refusal(OnboardingError("internal_error"), "certificate_signing", started)
    return json_response(issued.to_body(), 200)


@bp.function_name("revoke_certificate")
@bp.route(route="certificates/revoke", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def revoke_certificate(req: func.HttpRequest) -> func.HttpResponse:
    started = time.perf_counter()
    try:
        from cert_lifecycle.revocation import parse_revocation_request

        request = parse_revocation_request(req.get_body())
        result = lifecycle().revoker.revoke(request)
    except OnboardingError as error:
        return _refusal(error, "certificate_revocation", started)
    except SettingError as exc:
        return _refusal(OnboardingError("configuration_error", str(exc)), "certificate_revocation", started)
    except Exception:
        log.exception("revoke_certificate failed unexpectedly")
        return _refusal(OnboardingError("internal_error"), "certificate_revocation", started)
    unpublished = result.unpublished_error()
    telemetry.emit("certificate_revocation", (time.perf_counter() - started) * 1000,
                   outcome="unpublished" if unpublished else "revoked", changed=result.changed,
                   certificates=len(result.revoked), reasonCode=unpublished.code if unpublished else None)
    if unpublished is not None:
        # Recorded, announced, devices disabled, but not yet on every CRL: 503, never 500. The refresh timer
        # publishes it (it compares each CRL with SQL); retrying this request publishes it sooner.
        return json_response({**unpublished.to_body(), **result.to_body()}, unpublished.status)
    return json_response(result.to_body(), 200)


@bp.function_name("refresh_crls")
@bp.timer_trigger(schedule=CRL_REFRESH_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
def refresh_crls(timer: func.TimerRequest) -> None:
    lc = lifecycle()
    failed = []
    for name, crl in lc.publisher.publish_each(lc.cas, actor="refresh_crls").items():
        if isinstance(crl, Exception):
            telemetry.emit("crl_status", ca=name, reasonCode=getattr(crl, "code", "internal_error"))
            failed.append(name)
        else:
            telemetry.emit("crl_status", ca=name, crlNumber=crl.number, entries=crl.entries,
                           republished=crl.changed, nextUpdate=iso_utc(crl.next_update) if crl.next_update else None)
    if failed:
        raise RuntimeError(f"CRL refresh failed for {', '.join(failed)}")


@bp.function_name("scan_expiring_certificates")
@bp.timer_trigger(schedule=SCAN_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
def scan_expiring_certificates(timer: func.TimerRequest) -> None:
    report = lifecycle().scanner.run()
    if report.hubs and all(h.error for h in report.hubs):
        raise RuntimeError("expiry scan reached no hub: " + "; ".join(str(h.error) for h in report.hubs))


@bp.function_name("process_renewal")
@bp.queue_trigger(arg_name="msg", queue_name=RENEWAL_QUEUE, connection="AzureWebJobsStorage")
def process_renewal(msg: func.QueueMessage) -> None:
    from cert_lifecycle.renewal import InvalidRenewalMessage, parse_renewal_message

    lc = lifecycle()
    text = msg.get_body().decode("utf-8", "replace")
    try:
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidRenewalMessage("not JSON") from None
        request = parse_renewal_message(data, lc.hosts)
    except InvalidRenewalMessage as exc:
        # Can never succeed: straight to the poison queue with the reason, instead of five pointless retries.
        log.error("renewal message %s refused: %s", msg.id, exc)
        telemetry.emit("certificate_renewal", step="invalid_message", reasonCode="invalid_request")
        lc.queues.send(f"{RENEWAL_QUEUE}-poison", {"error": str(exc), "message": text[:4000]})
        return
    lc.renewals.request(request)  # transient failures raise: the queue redelivers, then poisons


@bp.function_name("collect_renewal_csrs")
@bp.timer_trigger(schedule=COLLECT_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
def collect_renewal_csrs(timer: func.TimerRequest) -> None:
    report = lifecycle().renewals.collect()
    log.info("renewal collector: %s", json.dumps(report.to_dict(), sort_keys=True))
