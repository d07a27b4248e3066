"""The certificate lifecycle's functions. Thin: parse -> logic (cert_lifecycle modules) -> answer.

| function | trigger | |
|---|---|---|
| sign_csr | POST /api/certificates/sign (function key + partner) | PEM CSR (raw or {"csr": ...}) -> certificate |
| sign_csr_batch | POST /api/certificates/batch (function key + partner) | a lot's CSRs -> one result each, in order |
| certificate_lot | GET /api/certificates/lots/{lot} (function key + partner) | the partner's certificates of a lot |
| partner_api_openapi | GET /api/partner-api/openapi.json (anonymous) | the OpenAPI document of the partner API |
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
from shared.retry import DeadlineExceeded, Deadlines, RunBudget
from shared.times import iso_utc

log = logging.getLogger(__name__)
bp = func.Blueprint()

SCAN_SCHEDULE = "0 0 6 * * *"
CRL_REFRESH_SCHEDULE = "0 0 */6 * * *"
COLLECT_SCHEDULE = "0 5 * * * *"
# sign and revoke answer within their deadlines (CERT_SIGN_DEADLINE_SECONDS, CERT_REVOKE_DEADLINE_SECONDS): the work
# runs in this pool and what is not done in time goes on in the background while the caller gets 503 with
# Retry-After (issue 16: with Key Vault hung, sign gave no answer within 60 s).
DEADLINES = Deadlines("cert-lifecycle", workers=16)
RETRY_AFTER_S = 5


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
    elif error.status in (429, 503):  # may succeed later: say when to come back
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _late(exc: DeadlineExceeded) -> OnboardingError:
    return OnboardingError("dependency_unavailable", exc.reason)


@bp.function_name("sign_csr")
@bp.route(route="certificates/sign", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def sign_csr(req: func.HttpRequest) -> func.HttpResponse:
    started = time.perf_counter()
    try:
        lc = lifecycle()
        max_bytes = lc.settings.max_csr_bytes
    except SettingError as exc:
        return _refusal(OnboardingError("configuration_error", str(exc)), "certificate_signing", started)
    who = {"actor": "sign_csr"}  # until the partner is known
    body, authorization = req.get_body(), req.headers.get("Authorization")

    def work():
        from cert_lifecycle.csr import csr_from_body

        # The function key got the request this far; the partner credential says who is asking (docs/partners.md).
        partner = lc.partner_auth.partner(authorization)
        who["actor"] = f"partner:{partner.partner_id}"
        csr = csr_from_body(body, max_bytes)
        return lc.issuer.issue(csr, actor=who["actor"], partner=partner)

    try:
        issued = DEADLINES.run(work, lc.settings.sign_deadline_s, "certificate signing", RETRY_AFTER_S)
    except DeadlineExceeded as late:
        error = _late(late)
        DEADLINES.background(lambda: lc.audit.certificate_event("rejected", reason_code=error.code,
                                                                actor=who["actor"], details={"detail": error.detail}))
        return _refusal(error, "certificate_signing", started)
    except OnboardingError as error:
        lc.audit.certificate_event("rejected", reason_code=error.code, actor=who["actor"],
                                   details={"detail": error.detail})
        return _refusal(error, "certificate_signing", started)
    except SettingError as exc:
        return _refusal(OnboardingError("configuration_error", str(exc)), "certificate_signing", started)
    except Exception:
        log.exception("sign_csr failed unexpectedly")
        return _refusal(OnboardingError("internal_error"), "certificate_signing", started)
    return json_response(issued.to_body(), 200)


def _partner_request(req: func.HttpRequest, event: str, started: float, handle) -> func.HttpResponse:
    """A partner route after the function key: the partner credential (docs/partners.md), then handle(lc, partner,
    actor) -> HttpResponse; refusals audited and answered as sign_csr's are."""
    try:
        lc = lifecycle()
        lc.settings  # noqa: B018 - a malformed setting is configuration_error before anything else
    except SettingError as exc:
        return _refusal(OnboardingError("configuration_error", str(exc)), event, started)
    actor = event
    try:
        partner = lc.partner_auth.partner(req.headers.get("Authorization"))
        actor = f"partner:{partner.partner_id}"
        return handle(lc, partner, actor)
    except OnboardingError as error:
        lc.audit.certificate_event("rejected", reason_code=error.code, actor=actor, details={"detail": error.detail})
        return _refusal(error, event, started)
    except SettingError as exc:
        return _refusal(OnboardingError("configuration_error", str(exc)), event, started)
    except Exception:
        log.exception("%s failed unexpectedly", event)
        return _refusal(OnboardingError("internal_error"), event, started)


@bp.function_name("sign_csr_batch")
@bp.route(route="certificates/batch", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def sign_csr_batch(req: func.HttpRequest) -> func.HttpResponse:
    started = time.perf_counter()

    def handle(lc, partner, actor) -> func.HttpResponse:
        from cert_lifecycle.batch import BatchIssuer, parse_batch_request

        request = parse_batch_request(req.get_body())
        result = BatchIssuer(lc.issuer, lc.audit).issue(request, partner)
        summary = result.summary()
        telemetry.emit("certificate_batch", (time.perf_counter() - started) * 1000, outcome="processed",
                       lot=request.lot, csrs=summary["csrs"], issued=summary["issued"], refused=summary["refused"],
                       notAttempted=summary["notAttempted"])
        response = json_response(result.to_body(), 200)
        if result.quota_exceeded:
            from cert_lifecycle.partners import seconds_to_next_day

            response.headers["Retry-After"] = str(seconds_to_next_day())
        return response

    return _partner_request(req, "certificate_batch", started, handle)


@bp.function_name("certificate_lot")
@bp.route(route="certificates/lots/{lot}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def certificate_lot(req: func.HttpRequest) -> func.HttpResponse:
    started = time.perf_counter()

    def handle(lc, partner, actor) -> func.HttpResponse:
        from cert_lifecycle.batch import lot_status

        try:
            body = lot_status(lc.records, req.route_params.get("lot", ""), partner)
        except OnboardingError:
            raise
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"asset register read failed ({type(exc).__name__})") \
                from exc
        return json_response(body, 200)

    return _partner_request(req, "certificate_lot", started, handle)


@bp.function_name("partner_api_openapi")
@bp.route(route="partner-api/openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def partner_api_openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The partner API's OpenAPI document (cert_lifecycle/partner_api.openapi.json, the file the repo keeps).
    Anonymous: it is the same document the partner kit ships, static, with no deployment detail in it (no tenant,
    host, CA or hub name); partner tooling fetches it before any key is exchanged. Every route it describes still
    needs the function key and the partner token (docs/partners.md)."""
    from cert_lifecycle.openapi import document_bytes

    return func.HttpResponse(document_bytes(), status_code=200, mimetype="application/json",
                             headers={"Cache-Control": "public, max-age=3600"})


@bp.function_name("revoke_certificate")
@bp.route(route="certificates/revoke", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def revoke_certificate(req: func.HttpRequest) -> func.HttpResponse:
    started = time.perf_counter()
    try:
        from cert_lifecycle.revocation import parse_revocation_request

        request = parse_revocation_request(req.get_body())
        lc = lifecycle()
        # Not answered in time: the revocation goes on in the background; the same request again is safe.
        result = DEADLINES.run(lambda: lc.revoker.revoke(request), lc.settings.revoke_deadline_s,
                               "certificate revocation", RETRY_AFTER_S)
    except DeadlineExceeded as late:
        return _refusal(_late(late), "certificate_revocation", started)
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
        response = json_response({**unpublished.to_body(), **result.to_body()}, unpublished.status)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    return json_response(result.to_body(), 200)


@bp.function_name("refresh_crls")
@bp.timer_trigger(schedule=CRL_REFRESH_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
def refresh_crls(timer: func.TimerRequest) -> None:
    lc = lifecycle()
    # One CA at a time within the run's budget (shared/retry.py RUN_BUDGETS_S); a CA not reached is refreshed by the
    # next run (every 6 h), long before its CRL's nextUpdate (CRL_REFRESH_BEFORE_HOURS ahead).
    budget = RunBudget.for_trigger("refresh_crls", reserve_s=30)
    failed = []
    outcomes = {}
    for name in budget.take(list(lc.cas.names), "cas"):
        outcomes.update(lc.publisher.publish_each(_only(lc.cas, name), actor="refresh_crls"))
    for name, crl in outcomes.items():
        if isinstance(crl, Exception):
            telemetry.emit("crl_status", ca=name, reasonCode=getattr(crl, "code", "internal_error"))
            failed.append(name)
        else:
            telemetry.emit("crl_status", ca=name, crlNumber=crl.number, entries=crl.entries,
                           republished=crl.changed, nextUpdate=iso_utc(crl.next_update) if crl.next_update else None)
    budget.emit(done=len(outcomes))
    if failed:
        raise RuntimeError(f"CRL refresh failed for {', '.join(failed)}")


class _only:
    """The CA directory narrowed to one name, for publish_each (which keeps each CA's failure to itself)."""

    def __init__(self, cas, name: str):
        self._cas, self.names = cas, [name]

    def by_name(self, name: str):
        return self._cas.by_name(name)


@bp.function_name("scan_expiring_certificates")
@bp.timer_trigger(schedule=SCAN_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
def scan_expiring_certificates(timer: func.TimerRequest) -> None:
    lc = lifecycle()
    # Reserve: a hub call's timeout and a retry, the most a unit of work started just before the end may take.
    budget = RunBudget.for_trigger("scan_expiring_certificates", reserve_s=2 * lc.hubs.timeout_s)
    report = lc.scanner.run(budget=budget)
    budget.emit(done=len(report.queued) + report.tags_written)
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
    # transient failures raise, or the message's budget runs out: the queue redelivers, then poisons
    budget = RunBudget.for_trigger("process_renewal")
    lc.renewals.request(request, budget)


@bp.function_name("collect_renewal_csrs")
@bp.timer_trigger(schedule=COLLECT_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
def collect_renewal_csrs(timer: func.TimerRequest) -> None:
    lc = lifecycle()
    budget = RunBudget.for_trigger("collect_renewal_csrs", reserve_s=3 * lc.hubs.timeout_s)
    report = lc.renewals.collect(budget)
    budget.emit(done=len(report.issued) + len(report.rejected) + len(report.completed) + len(report.closed))
    log.info("renewal collector: %s", json.dumps(report.to_dict(), sort_keys=True))
