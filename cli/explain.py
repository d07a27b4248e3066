"""`onboarding explain CN`: where would the allocation webhook put this sensor, and why (allocation/explain.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.output import Outcome
from shared.errors import OnboardingError


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "explain", parents=[common], help="where a sensor would be allocated, and why (nothing is written)",
        description="Run the allocation decision for a CN and print each step: identity, certificate, trust (CRL), "
                    "facility, the load of every linked hub, and the decision or the refusal with its code.")
    parser.add_argument("cn", help="certificate CN / registration ID, e.g. sensor-temp-FAC03-SN482019")
    parser.add_argument("--cert", type=Path, metavar="FILE",
                        help="the device certificate (PEM or DER) instead of the newest one on record")
    parser.add_argument("--linked-hub", action="append", dest="linked_hubs", metavar="HOST",
                        help="a hub DPS links (repeatable; default: every configured hub)")
    parser.add_argument("--current-hub", metavar="HOST", help="the hub the device is on now (re-provisioning)")
    parser.set_defaults(run=run)


def read_certificate(path: Path):
    """The certificate of a PEM or DER file, as the webhook reads the one DPS passes."""
    from cryptography import x509

    from allocation.certificate import from_certificate

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OnboardingError("invalid_request", f"--cert {path}: {exc.strerror or exc}") from None
    try:
        loaded = (x509.load_pem_x509_certificate(raw) if b"-----BEGIN" in raw else x509.load_der_x509_certificate(raw))
    except ValueError as exc:
        raise OnboardingError("certificate_invalid", f"--cert {path}: {exc}") from None
    return from_certificate(loaded)


def run(args: argparse.Namespace) -> Outcome:
    from allocation.explain import explain, render

    certificate = read_certificate(args.cert) if args.cert else None
    result = explain(args.cn, certificate, args.linked_hubs, args.current_hub)
    return Outcome(result.report, render, result.refusal)
