"""`onboarding partners ...`: manufacturing partners (docs/partners.md): create, list, disable.

`create` registers the partner in SQL (cert_lifecycle/partners.py PartnerDirectory: its facilities, sensor types,
serial prefix and daily quota) and prints JSON with `partnerId` and `authorization`, the Authorization header value
the partner sends beside the function key. Against the local stack that is a bearer token the stack's identity
endpoint issues for the partner (local/partners.py). Against a deployment the partner authenticates with its own
Entra application: `--partner-id` is that application's client ID, and `authorization` says what the operator sets up
in Entra (the app role assignment) instead of printing a token.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, TextIO

from cli.output import Outcome, render_fields
from shared.errors import OnboardingError


def register(commands, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("partners", parents=[common], help="manufacturing partners: create, list, disable",
                                description=__doc__)
    partners = group.add_subparsers(dest="partners_command", required=True, metavar="SUBCOMMAND")
    create = partners.add_parser("create", parents=[common], help="register a partner and print its credential")
    create.add_argument("name")
    create.add_argument("--facility", dest="facilities", action="append", default=[], metavar="CODE",
                        help="a facility it may serve (repeatable; none: every facility)")
    create.add_argument("--sensor-type", dest="sensor_types", action="append", default=[], metavar="TYPE",
                        help="a sensor type code it may serve, e.g. temp (repeatable; none: every type)")
    create.add_argument("--serial-prefix", metavar="PREFIX", help="device serials must start with this")
    create.add_argument("--daily-quota", type=int, default=1000, metavar="N", help="certificates per UTC day")
    create.add_argument("--partner-id", metavar="CLIENT_ID",
                        help="the client ID of the partner's Entra application (required against Azure)")
    create.set_defaults(run=run_create)
    listed = partners.add_parser("list", parents=[common], help="every partner with its scope and today's use")
    listed.set_defaults(run=run_list)
    disable = partners.add_parser("disable", parents=[common], help="refuse the partner from its next request on")
    disable.add_argument("partner_id", metavar="ID")
    disable.set_defaults(run=run_disable)


def _directory():
    from cert_lifecycle.partners import PartnerDirectory
    from shared.bootstrap import services

    return PartnerDirectory(services().database)


def _role_instructions(partner_id: str) -> str:
    from cert_lifecycle.partners import PARTNER_ROLE

    return (f"no token is issued here: in Entra, assign the app role {PARTNER_ROLE} of the onboarding API's app "
            f"registration to the partner's application {partner_id} (docs/partners.md, 'Set up a partner'); the "
            f"partner then sends 'Bearer <its own access token for that API>'")


def _local_partners():
    """local/partners.py (the stack's token issuer). local/ is not part of the installed package (pyproject.toml), so
    the `onboarding` script, unlike `python -m cli` run from the repository, does not have it on sys.path: the CLI is
    installed editable from the repository, and local/ is beside cli/."""
    try:
        import local.partners as found
    except ModuleNotFoundError as exc:
        if exc.name not in ("local", "local.partners"):
            raise
        import sys
        from pathlib import Path

        sys.path.append(str(Path(__file__).resolve().parents[1]))
        import local.partners as found
    return found


def run_create(args: argparse.Namespace) -> Outcome:
    local_partners = _local_partners()
    is_local, partner_authorization = local_partners.is_local, local_partners.partner_authorization

    local = is_local(os.environ)
    if not local and not args.partner_id:
        raise OnboardingError("invalid_request", "against a deployment --partner-id (the client ID of the partner's "
                                                 "Entra application) is required")
    partner = _directory().create(args.name, facilities=args.facilities, sensor_types=args.sensor_types,
                                  serial_prefix=args.serial_prefix, daily_quota=args.daily_quota,
                                  partner_id=args.partner_id)
    data: dict[str, Any] = partner.to_dict()
    if local:
        data["authorization"] = partner_authorization(os.environ, partner.partner_id)
        data["note"] = "send with the function key: x-functions-key (or ?code=) and Authorization: <authorization>"
    else:
        data["authorization"] = None
        data["entraSetup"] = _role_instructions(partner.partner_id)
    return Outcome(data, render_fields)


def render_list(data: dict[str, Any], out: TextIO) -> None:
    for p in data["partners"]:
        state = "active" if p["active"] else "disabled"
        print(f"{p['partnerId']}  {p['name']:<24} {state:<8} facilities={','.join(p['facilities'])} "
              f"types={','.join(p['sensorTypes'])} prefix={p['serialPrefix'] or '-'} "
              f"today={p['usedToday']}/{p['dailyQuota']}", file=out)
    if not data["partners"]:
        print("no partners", file=out)


def run_list(args: argparse.Namespace) -> Outcome:
    return Outcome({"partners": [p.to_dict() for p in _directory().all()]}, render_list)


def run_disable(args: argparse.Namespace) -> Outcome:
    directory = _directory()
    if not directory.set_active(args.partner_id, False):
        raise OnboardingError("invalid_request", f"no partner {args.partner_id}")
    return Outcome(directory.get(args.partner_id).to_dict(), render_fields)
