"""`onboarding certs ...`: the certificate lifecycle by hand (status, revoke, refresh-crls, scan, collect).

Each subcommand runs the product's own code (cert_lifecycle.wiring.lifecycle()), as the timers and the HTTP
functions do; `status` only reads (the certificate register in SQL, and the twin's renewal tag).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import re
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TextIO

from cli.output import Outcome, render_fields
from shared.errors import OnboardingError
from shared.identity import parse_device_id
from shared.times import iso_utc, parse_utc

TWIN_DEADLINE_S = 5.0  # the renewal tag is a courtesy: hubs that do not answer by then are listed, not awaited
_ACTOR_CHARACTERS = re.compile(r"[^A-Za-z0-9 ._@:/+-]")

def register(commands, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("certs", parents=[common], help="certificate lifecycle: status, revoke, CRLs, scan",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    certs = group.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")

    status = certs.add_parser("status", parents=[common], help="what the certificate register says for a device")
    status.add_argument("cn", help="device ID / CN")
    status.set_defaults(run=run_status)

    revoke = certs.add_parser(
        "revoke", parents=[common], help="revoke certificates (as POST /api/certificates/revoke)",
        description="Revoke a certificate by serial number (issuer: CA name or DN, optional when the serial is on "
                    "record) or every active certificate of a device: revocation row, new CRL in Key Vault, the "
                    "device disabled on its hub, a security alert. Revoking again changes nothing.")
    revoke.add_argument("--serial-number", "--serial", dest="serial_number", metavar="HEX")
    revoke.add_argument("--issuer", metavar="CA", help="CA name (intermediate-ca-west) or subject DN")
    revoke.add_argument("--device-id", metavar="CN", help="revoke every active certificate of this device")
    revoke.add_argument("--reason", default="unspecified",
                        help="unspecified (default), keyCompromise, affiliationChanged, superseded, "
                             "cessationOfOperation or privilegeWithdrawn")
    revoke.add_argument("--revoked-by", metavar="WHO", help="recorded as the actor (default: cli:<user>)")
    revoke.set_defaults(run=run_revoke)

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


# -- revoke -------------------------------------------------------------------------------------------------
def _actor(given: str | None) -> str:
    if given:
        return given
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{_ACTOR_CHARACTERS.sub('_', user)}"[:100]


def run_revoke(args: argparse.Namespace) -> Outcome:
    """The HTTP function's path: the same body, validated by the same parser, revoked by the same Revoker."""
    from cert_lifecycle.revocation import parse_revocation_request

    body = {"serialNumber": args.serial_number, "issuer": args.issuer, "deviceId": args.device_id,
            "reason": args.reason, "revokedBy": _actor(args.revoked_by)}
    request = parse_revocation_request(json.dumps({k: v for k, v in body.items() if v is not None}).encode())
    result = _lifecycle().revoker.revoke(request)
    return Outcome(result.to_body(), render_fields)


# -- CRLs, scan, collect ------------------------------------------------------------------------------------
def run_refresh_crls(args: argparse.Namespace) -> Outcome:
    lc = _lifecycle()
    crls = []
    for authority in lc.cas.all():
        crl = lc.publisher.publish(authority, actor="cli")
        crls.append({"ca": authority.name, "crlNumber": crl.number, "entries": crl.entries,
                     "nextUpdate": iso_utc(crl.next_update) if crl.next_update else None, "changed": crl.changed})
    return Outcome(crls, render_crls)


def render_crls(crls: list[dict[str, Any]], out: TextIO) -> None:
    for crl in crls:
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
