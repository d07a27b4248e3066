"""`onboarding certs ...`: the certificate lifecycle by hand (status, revoke, allow, refresh-crls, scan, collect).

Each subcommand runs the product's own code (cert_lifecycle.wiring.lifecycle()), as the timers and the HTTP
functions do; `status` only reads (the certificate register in SQL, and the twin's renewal tag), and so does
`revoke` without `--yes`: it shows what the Revoker would revoke, and exits 2 (confirmation_required). `allow`
lets a device disallowed at DPS by a revocation for cause through its enrollment group again (shared/dps.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import re
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TextIO

from cert_lifecycle.partners import REISSUE_REASONS
from cli.output import Outcome, render_fields
from shared.errors import OnboardingError
from shared.identity import parse_device_id
from shared.times import iso_utc, parse_utc

TWIN_DEADLINE_S = 5.0  # the renewal tag is a courtesy: hubs that do not answer by then are listed, not awaited
_ACTOR_CHARACTERS = re.compile(r"[^A-Za-z0-9 ._@:/+-]")
PLAN_LISTED = 20  # certificates listed in text output (--json has them all)
PROGRESS_FROM = 100  # progress lines on stderr for calls revoking at least this many certificates

def register(commands, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("certs", parents=[common], help="certificate lifecycle: status, revoke, CRLs, scan",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    certs = group.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")

    status = certs.add_parser("status", parents=[common], help="what the certificate register says for a device")
    status.add_argument("cn", help="device ID / CN")
    status.set_defaults(run=run_status)

    revoke = certs.add_parser(
        "revoke", parents=[common], help="revoke certificates (POST /api/certificates/revoke); dry run without --yes",
        description="Revoke certificates by serial number (issuer: CA name or DN, optional when the serial is on "
                    "record), every active certificate of devices, of a facility or of a manufacturing lot: revocation "
                    "rows, one new CRL per CA, the devices disabled on their hub, security alerts. Without --yes it "
                    "only prints what it would revoke (how many certificates in which CAs) and exits 2. Revoking "
                    "again changes nothing.")
    revoke.add_argument("--serial-number", "--serial", dest="serial_numbers", metavar="HEX", action="append",
                        default=[], help="a serial to revoke (repeatable)")
    revoke.add_argument("--issuer", metavar="CA", help="CA name (intermediate-ca-west) or subject DN of the serials")
    revoke.add_argument("--device-id", dest="device_ids", metavar="CN", action="append", default=[],
                        help="revoke every active certificate of this device (repeatable)")
    revoke.add_argument("--facility", metavar="CODE", help="revoke every active certificate of the facility's devices")
    revoke.add_argument("--lot", metavar="LOT",
                        help="revoke every active certificate of the manufacturing lot (a partner batch's lot)")
    revoke.add_argument("--from-file", metavar="FILE", type=Path,
                        help="serials or device IDs, one per line (blank lines and # comments skipped; - for stdin)")
    revoke.add_argument("--reason", default="unspecified",
                        help="unspecified (default), keyCompromise, affiliationChanged, superseded, "
                             "cessationOfOperation or privilegeWithdrawn")
    revoke.add_argument("--revoked-by", metavar="WHO", help="recorded as the actor (default: cli:<user>)")
    revoke.add_argument("--yes", action="store_true", help="revoke (without it: print what would be revoked, exit 2)")
    revoke.set_defaults(run=run_revoke)

    allow = certs.add_parser(
        "allow", parents=[common], help="let a re-issued device through DPS again (delete its disabled enrollment)",
        description="A revocation for cause disables the device at DPS too: a disabled individual enrollment that "
                    "pins its revoked certificate, which DPS matches before the enrollment groups. Once the device has "
                    "a new certificate, this deletes that enrollment (as `az iot dps enrollment delete` would), so the "
                    "device registers through its group again; the CRL still refuses the revoked certificate. Needs "
                    "DPS_SERVICE_HOSTNAME (and Device Provisioning Service Data Contributor for your login) or "
                    "DPS_CONNECTION_STRING in the settings.")
    allow.add_argument("cn", help="device ID / CN (the enrollment's registration ID)")
    allow.add_argument("--allowed-by", metavar="WHO", help="recorded as the actor (default: cli:<user>)")
    allow.set_defaults(run=run_allow)

    reissue = certs.add_parser(
        "reissue", parents=[common], help="let a device get a new certificate: supersede its active one(s)",
        description="An operator re-issue: the device's active certificates are superseded through the revocation "
                    "path (reason superseded: only certificates issued to this device), the reason is audited, and "
                    "the partner's next CSR for the device is signed (without it: certificate_exists, 409).")
    reissue.add_argument("device_id", metavar="CN")
    reissue.add_argument("--reason", required=True, choices=list(REISSUE_REASONS))
    reissue.add_argument("--by", dest="revoked_by", metavar="WHO", help="recorded as the actor (default: cli:<user>)")
    reissue.set_defaults(run=run_reissue)
    refresh = certs.add_parser("refresh-crls", parents=[common], help="re-issue every CRL that is due")
    refresh.set_defaults(run=run_refresh_crls)

    scan = certs.add_parser("scan", parents=[common], help="run the expiry scan now (queues and tags for real)")
    scan.add_argument("--at", metavar="TIME", help="scan as of this ISO-8601 time, e.g. 2027-06-01 (rehearsals)")
    scan.set_defaults(run=run_scan)

    collect = certs.add_parser("collect", parents=[common], help="run the renewal collector now")
    collect.set_defaults(run=run_collect)


def _lifecycle():
    from cert_lifecycle.wiring import lifecycle

    return lifecycle()


# -- status -------------------------------------------------------------------------------------------------
def _certificate(record, revocation) -> dict[str, Any]:
    return {"issuer": record.issuer, "serialNumber": record.serial_number, "notBefore": iso_utc(record.not_before),
            "notAfter": iso_utc(record.not_after), "status": record.status, "revoked": revocation is not None,
            "revocation": {"reason": revocation.reason, "revokedAt": iso_utc(revocation.revoked_at),
                           "revokedBy": revocation.revoked_by} if revocation else None}


def renewal_tag(svc, device_id: str) -> dict[str, Any]:
    """The device's tags.certificateRenewal from whichever hub holds it, asking every hub at once (bounded)."""
    from cert_lifecycle.expiry import renewal_tag as tag_of
    from shared.retry import RetryPolicy

    hub = svc.iothub(RetryPolicy(attempts=1))
    hosts = svc.settings.iot_hub_host_names
    pool = ThreadPoolExecutor(max_workers=max(1, len(hosts)), thread_name_prefix="twin")
    futures = {host: pool.submit(hub.get_twin, host, device_id) for host in hosts}
    wait(futures.values(), timeout=TWIN_DEADLINE_S)
    pool.shutdown(wait=False, cancel_futures=True)
    found, unanswered = None, []
    for host, future in futures.items():
        if not future.done() or future.exception() is not None:
            unanswered.append(host)
        elif future.result() is not None and found is None:
            found = {"hub": host, "tag": tag_of(future.result()) or None}
    return {"twin": found, "unansweredHubs": unanswered}


def run_status(args: argparse.Namespace) -> Outcome:
    from cert_lifecycle.records import CertificateRecords
    from shared.bootstrap import services

    device_id = parse_device_id(args.cn).device_id
    svc = services()
    records = CertificateRecords(svc.database)
    certificates = [_certificate(r, records.revocation(r.issuer, r.serial_number))
                    for r in records.device_certificates(device_id)]
    data = {"deviceId": device_id, "certificates": certificates, **renewal_tag(svc, device_id)}
    return Outcome(data, render_status)


def render_status(data: dict[str, Any], out: TextIO) -> None:
    print(f"{data['deviceId']}:", file=out)
    if not data["certificates"]:
        print("  no certificate on record", file=out)
    for cert in data["certificates"]:
        revoked = cert["revocation"]
        print(f"  {cert['serialNumber']:<34} {cert['status']:<10} {cert['notBefore'][:10]} .. {cert['notAfter'][:10]}"
              f"  {cert['issuer']}", file=out)
        if revoked:
            print(f"  {'':<34} revoked {revoked['revokedAt']} ({revoked['reason']}, by {revoked['revokedBy']})",
                  file=out)
    twin = data["twin"]
    if twin is None:
        print("  twin: not found on any hub" if not data["unansweredHubs"] else "  twin: unknown", file=out)
    else:
        print(f"  twin on {twin['hub']}: renewal {json.dumps(twin['tag'], sort_keys=True) if twin['tag'] else '-'}",
              file=out)
    if data["unansweredHubs"]:
        print(f"  hubs not answering: {', '.join(data['unansweredHubs'])}", file=out)


# -- reissue ------------------------------------------------------------------------------------------------
def run_reissue(args: argparse.Namespace) -> Outcome:
    from cert_lifecycle.partners import authorize_reissue

    lc = _lifecycle()
    data = authorize_reissue(args.device_id, args.reason, _actor(args.revoked_by), records=lc.records,
                             revoker=lc.revoker, audit=lc.audit)
    return Outcome(data, render_fields)


# -- revoke -------------------------------------------------------------------------------------------------
def _actor(given: str | None) -> str:
    if given:
        return given
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{_ACTOR_CHARACTERS.sub('_', user)}"[:100]


def read_selection(lines: Iterable[str]) -> tuple[list[str], list[str]]:
    """(serials, device IDs) from --from-file lines: a line that starts with `sensor-` is a device ID."""
    serials, device_ids = [], []
    for line in lines:
        value = line.split("#", 1)[0].strip()
        if value:
            (device_ids if value.startswith("sensor-") else serials).append(value)
    return serials, device_ids


def _selection(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    serials, device_ids = list(args.serial_numbers), list(args.device_ids)
    if args.from_file is not None:
        if str(args.from_file) == "-":
            more = read_selection(sys.stdin)
        else:
            try:
                more = read_selection(args.from_file.read_text(encoding="utf-8").splitlines())
            except OSError as exc:
                raise OnboardingError("invalid_request", f"--from-file: {exc.strerror or exc}") from None
        serials, device_ids = serials + more[0], device_ids + more[1]
    return serials, device_ids


def revoke_body(args: argparse.Namespace) -> dict[str, Any]:
    """The HTTP request body for the options: a single form for one serial or one device (as before the bulk
    forms existed), else the bulk form with every selector given."""
    serials, device_ids = _selection(args)
    body: dict[str, Any] = {"reason": args.reason, "revokedBy": _actor(args.revoked_by)}
    if args.issuer:
        body["issuer"] = args.issuer
    lot = getattr(args, "lot", None)
    if args.facility is None and lot is None and args.from_file is None and len(serials) <= 1 \
            and len(device_ids) <= 1:
        return {**body, "serialNumber": serials[0] if serials else None,
                "deviceId": device_ids[0] if device_ids else None}
    return {**body, "serialNumbers": serials or None, "deviceIds": device_ids or None, "facility": args.facility,
            "lot": lot}


def plan_summary(plan, reason: str) -> dict[str, Any]:
    """What a dry run shows: how many certificates in which CAs, and which (the first PLAN_LISTED)."""
    return {"dryRun": True, "reason": reason, "certificates": len(plan.targets), "byCa": plan.by_ca(),
            "devices": len({t.device_id for t in plan.targets if t.device_id}),
            "notOnRecord": sum(1 for t in plan.targets if not t.on_record), "notFound": plan.not_found,
            "targets": [{"issuer": t.authority.name, "serialNumber": t.serial_number, "deviceId": t.device_id}
                        for t in plan.targets]}


def render_plan(data: dict[str, Any], out: TextIO) -> None:
    by_ca = ", ".join(f"{count} in {ca}" for ca, count in data["byCa"].items()) or "none"
    print(f"would revoke {data['certificates']} certificate(s) of {data['devices']} device(s) as {data['reason']}: "
          f"{by_ca}", file=out)
    for target in data["targets"][:PLAN_LISTED]:
        print(f"  {target['serialNumber']:<34} {target['issuer']:<26} {target['deviceId'] or '(not on record)'}",
              file=out)
    if len(data["targets"]) > PLAN_LISTED:
        print(f"  ... and {len(data['targets']) - PLAN_LISTED} more (--json lists all)", file=out)
    if data["notFound"]:
        print(f"no active certificate on record: {', '.join(data['notFound'])}", file=out)


def render_revocation(data: dict[str, Any], out: TextIO) -> None:
    summary = data["summary"]
    by_ca = ", ".join(f"{count} in {ca}" for ca, count in summary["byCa"].items()) or "none"
    print(f"revoked {summary['newlyRevoked']} certificate(s), {summary['unchanged']} already revoked: {by_ca}",
          file=out)
    for ca, number in data["crlNumbers"].items():
        why = data["unpublished"].get(ca)
        print(f"  {ca}: " + (f"CRL NOT PUBLISHED ({why}); the CRL refresh publishes it" if why else f"CRL {number}"),
              file=out)
    for entry in data["revoked"][:PLAN_LISTED]:
        print(f"  {entry['serialNumber']:<34} {entry['issuer']:<26} {entry['deviceId'] or '-'}"
              f"{'' if entry['changed'] else '  (unchanged)'}", file=out)
    if len(data["revoked"]) > PLAN_LISTED:
        print(f"  ... and {len(data['revoked']) - PLAN_LISTED} more (--json lists all)", file=out)
    for label, key in (("disabled on hubs", "disabledOn"), ("not disabled (revoke again)", "notDisabled"),
                       ("disallowed at DPS", "disallowedAtDps"), ("no active certificate on record", "notFound"),
                       ("warnings", "warnings")):
        if data[key]:
            print(f"{label}: {json.dumps(data[key]) if isinstance(data[key], dict) else ', '.join(data[key])}",
                  file=out)


def stderr_progress() -> Callable[[str, int, int], None]:
    """Progress on stderr when a call revokes PROGRESS_FROM certificates or more: the rows recorded (per CA), the
    CRLs published, the devices disabled (stdout keeps the result, so `--json > file` still shows progress)."""
    shown = {"on": False}
    labels = {"recorded": "certificates recorded", "published": "CRLs published", "disabled": "devices disabled",
              "disallowed": "devices disallowed at DPS"}

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "recorded" and total >= PROGRESS_FROM:
            shown["on"] = True
        if shown["on"]:
            print(f"revoking: {done}/{total} {labels.get(stage, stage)}", file=sys.stderr, flush=True)
    return progress


def run_revoke(args: argparse.Namespace) -> Outcome:
    """The HTTP function's path: the same body, validated by the same parser, revoked by the same Revoker; without
    --yes only the Revoker's plan (nothing written) and exit 2 with confirmation_required."""
    from cert_lifecycle.revocation import parse_revocation_request

    body = {k: v for k, v in revoke_body(args).items() if v is not None}
    request = parse_revocation_request(json.dumps(body).encode())
    revoker = _lifecycle().revoker
    if not args.yes:
        plan = revoker.plan(request)
        refusal = (OnboardingError("confirmation_required", f"nothing revoked; run again with --yes to revoke these "
                                                            f"{len(plan.targets)} certificate(s)") if plan.targets
                   else OnboardingError("certificate_not_found", "nothing to revoke: no active certificate matches"))
        return Outcome(plan_summary(plan, request.reason), render_plan, refusal)
    result = revoker.revoke(request, progress=stderr_progress())
    return Outcome(result.to_body(), render_revocation, result.unpublished_error())


# -- allow ----------------------------------------------------------------------------------------------------
def run_allow(args: argparse.Namespace) -> Outcome:
    """Delete the device's disabled individual enrollment at DPS (DpsEnrollments.allow), audited as dps_allowed."""
    from shared.dps import DpsAccessDenied, DpsRefused, PreconditionFailed

    device_id = parse_device_id(args.cn).device_id
    lc = _lifecycle()
    if lc.dps is None:
        raise OnboardingError("configuration_error", "DPS_SERVICE_HOSTNAME (or DPS_CONNECTION_STRING) is not set: "
                                                     "the settings name no DPS whose enrollments to change")
    try:
        deleted = lc.dps.allow(device_id)
    except (DpsAccessDenied, DpsRefused, PreconditionFailed) as exc:
        raise OnboardingError("dependency_unavailable", f"DPS {lc.dps.host_name}: {exc}") from exc
    actor = _actor(args.allowed_by)
    if deleted:
        lc.audit.certificate_event("dps_allowed", device_id=device_id, actor=actor,
                                   details={"dps": lc.dps.host_name})
    active = [r.serial_number for r in lc.records.active_certificates(device_id)]
    return Outcome({"deviceId": device_id, "dps": lc.dps.host_name, "allowed": deleted,
                    "activeCertificates": active}, render_allow)


def render_allow(data: dict[str, Any], out: TextIO) -> None:
    if data["allowed"]:
        print(f"{data['deviceId']}: disabled individual enrollment deleted at {data['dps']}; the device registers "
              "through its enrollment group again", file=out)
    else:
        print(f"{data['deviceId']}: no disabled individual enrollment at {data['dps']} (nothing to allow)", file=out)
    if not data["activeCertificates"]:
        print("  no active certificate on record for it: issue one (POST /api/certificates/sign) before it comes back",
              file=out)


# -- CRLs, scan, collect ------------------------------------------------------------------------------------
def run_refresh_crls(args: argparse.Namespace) -> Outcome:
    lc = _lifecycle()
    crls, failed = [], []
    for name, crl in lc.publisher.publish_each(lc.cas, actor="cli").items():
        if isinstance(crl, Exception):
            failed.append(f"{name} ({getattr(crl, 'code', type(crl).__name__)})")
            crls.append({"ca": name, "error": str(crl)[:200]})
        else:
            crls.append({"ca": name, "crlNumber": crl.number, "entries": crl.entries,
                         "nextUpdate": iso_utc(crl.next_update) if crl.next_update else None, "changed": crl.changed})
    failure = OnboardingError("dependency_unavailable", f"not refreshed: {', '.join(failed)}") if failed else None
    return Outcome(crls, render_crls, failure)


def render_crls(crls: list[dict[str, Any]], out: TextIO) -> None:
    for crl in crls:
        if "error" in crl:
            print(f"{crl['ca']}: not refreshed: {crl['error']}", file=out)
            continue
        print(f"{crl['ca']}: CRL {crl['crlNumber']}, {crl['entries']} entries, next update "
              f"{crl['nextUpdate'] or '?'}{' (new)' if crl['changed'] else ''}", file=out)


def parse_at(value: str) -> dt.datetime:
    """--at: an ISO-8601 date or time; without an offset it is UTC."""
    moment = parse_utc(value)
    if moment is None:
        raise OnboardingError("invalid_request", f"--at {value!r} is not an ISO-8601 time")
    return moment


def run_scan(args: argparse.Namespace) -> Outcome:
    at = parse_at(args.at) if args.at else None
    return Outcome(_lifecycle().scanner.run(at).to_dict(), render_fields)


def run_collect(args: argparse.Namespace) -> Outcome:
    return Outcome(_lifecycle().renewals.collect().to_dict(), render_fields)
