"""Where will this sensor go, and why? `python -m allocation.explain sensor-temp-FAC03-SN482019`

Runs the allocation decision for a CN against the configured data (SQL, Key Vault CRLs, hub statistics) and
prints each step, without writing audit rows or counting the device against a hub. The certificate is the one
given with --cert (PEM) or, by default, the newest active one this product issued for the CN.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cryptography import x509

from allocation.certificate import from_certificate
from allocation.decision import resolve_certificate
from allocation.policy import FacilityPlacement, choose_hub
from allocation.request import AllocationRequest
from shared.errors import OnboardingError
from shared.identity import parse_device_id


def load_settings_file(path: Path) -> None:
    """Values of a local.settings.json into the environment, without overriding what is set."""
    if path.exists():
        for key, value in json.loads(path.read_text()).get("Values", {}).items():
            os.environ.setdefault(key, str(value))


def explain(cn: str, cert_pem: bytes | None, linked_hubs: list[str] | None, current_hub: str | None,
            out=sys.stdout) -> int:
    from allocation.wiring import build_context
    from shared.bootstrap import services

    def step(name: str, text: str) -> None:
        print(f"  {name:<12} {text}", file=out)

    print(f"{cn}:", file=out)
    try:
        identity = parse_device_id(cn)
        step("identity", f"type {identity.type_code} ({identity.template}), facility {identity.facility}, "
                         f"serial {identity.serial}")
        svc = services()
        ctx = build_context(svc)
        hubs = linked_hubs or svc.settings.iot_hub_host_names
        certificate = from_certificate(x509.load_pem_x509_certificate(cert_pem)) if cert_pem else None
        request = AllocationRequest(cn, identity, "group", "explain", "x509", False, tuple(hubs), current_hub,
                                    None, None, certificate)
        cert, source = resolve_certificate(request, ctx)
        step("certificate", f"serial {cert.serial_hex}, valid to {cert.not_after:%Y-%m-%d} "
                            f"({'given' if source == 'dps' else 'from the certificate register'})")
        ca = ctx.trust.check(cert)
        index = ctx.trust.revocations(ca)
        step("trust", f"issued by {ca.name}; not on its CRL #{index.crl_number} ({len(index)} revoked, "
                      f"next update {index.next_update:%Y-%m-%d %H:%M}Z)")
        facility = ctx.facilities.get(identity.facility)
        step("facility", f"{facility.code} {facility.name}, region {facility.region}, "
                         f"preferred hub {facility.preferred_hub}")
        snapshot = ctx.capacity.snapshot()
        for host in hubs:
            load = snapshot.get(host)
            text = (f"{load.region:<8} {load.device_count}/{load.max_devices} devices "
                    f"({load.utilisation:.0%}){'' if load.accepting else ' NOT ACCEPTING'}" if load
                    else "no statistics (not configured or not answering): cannot be chosen")
            step("hub", f"{host}: {text}")
        choice = choose_hub(FacilityPlacement(facility.code, facility.region, facility.preferred_hub), snapshot,
                            hubs, current_hub, ctx.utilisation_threshold)
        step("decision", f"{choice.host_name} (rule: {choice.rule}"
                         f"{', cross-region' if choice.cross_region else ''})")
        return 0
    except OnboardingError as err:
        step("refused", f"{err.code} ({err.status}): {err.detail or err.error.message}")
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m allocation.explain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cn", help="certificate CN / registration ID, e.g. sensor-temp-FAC03-SN482019")
    parser.add_argument("--cert", type=Path, help="device certificate (PEM) instead of the one on record")
    parser.add_argument("--linked-hub", action="append", dest="linked_hubs",
                        help="a hub DPS links (repeatable; default: every configured hub)")
    parser.add_argument("--current-hub", help="the hub the device is on now (re-provisioning)")
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"),
                        help="read app settings from this file for variables not set (default: local.settings.json)")
    args = parser.parse_args(argv)
    load_settings_file(args.settings)
    pem = args.cert.read_bytes() if args.cert else None
    return explain(args.cn, pem, args.linked_hubs, args.current_hub)


if __name__ == "__main__":
    sys.exit(main())
