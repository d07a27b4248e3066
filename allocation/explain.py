"""Where will this sensor go, and why? `onboarding explain sensor-temp-FAC03-SN482019 [--cert device.pem]`

Runs the webhook's own decision (allocation.decision.decide) for a CN against the configured data (SQL, the CA
certificates in Key Vault, the CRLs in Blob Storage, hub statistics) with a reservation that takes nothing, so no
device is counted against a hub and no audit row is written, and reports each step: identity, certificate, trust
(with the CRL number), facility, the load of every linked hub, the decision, or the refusal with its code. The
steps are read from what decide() returns plus read-only queries of the same collaborators, never restated, so
explain cannot drift from the webhook. The certificate is the one given (--cert) or, by default, the one the
certificate register vouches for by the webhook's own rule when DPS sends none (allocation/decision.py).

`python -m allocation.explain` is an alias of `onboarding explain` (cli/explain.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from allocation.certificate import CertificateDetails
from allocation.decision import Allocation, AllocationContext, decide
from allocation.request import AllocationRequest
from shared.errors import OnboardingError
from shared.identity import DeviceIdentity, parse_device_id


@dataclass
class Explanation:
    """The report (JSON-ready) and, when the webhook would refuse the device, that refusal."""

    report: dict[str, Any]
    refusal: OnboardingError | None = None


def take_nothing(host_name: str) -> bool:
    """The reservation explain passes to decide(): every hub has room, nothing is counted."""
    return True


def explain(cn: str, certificate: CertificateDetails | None = None, linked_hubs: list[str] | None = None,
            current_hub: str | None = None, ctx: AllocationContext | None = None,
            configured_hubs: list[str] | None = None) -> Explanation:
    """The decision for cn, step by step. Raises OnboardingError for a CN that is no device ID and for faults
    (5xx codes: a dependency down, a bad setting); a refusal the webhook would answer is in the Explanation."""
    identity = parse_device_id(cn)
    if ctx is None:
        from allocation.wiring import build_context
        from shared.bootstrap import services

        svc = services()
        ctx, configured_hubs = build_context(svc), svc.settings.iot_hub_host_names
    hubs = list(linked_hubs or configured_hubs or [])
    request = AllocationRequest(
        registration_id=cn, identity=identity, enrollment_kind="group", enrollment_id="explain",
        attestation="x509", iot_edge=False, linked_hubs=tuple(hubs), current_hub=current_hub,
        current_device_id=None, device_payload=None, certificate=certificate)
    report: dict[str, Any] = {"deviceId": cn, "identity": _identity(identity)}
    try:
        allocation = decide(request, ctx, reserve=take_nothing)
    except OnboardingError as err:
        # A fault (a dependency down, a bad setting) is not an answer about this device; crl_unavailable is: the
        # webhook answers it with 503 until the CA's CRL (or certificate) can be trusted again, and says why.
        if err.status >= 500 and err.code != "crl_unavailable":
            raise
        report["refused"] = {"code": err.code, "status": err.status, "message": err.error.message,
                             "detail": err.detail}
        if err.code == "no_hub_capacity":
            report["hubs"] = hub_loads(ctx, hubs)
        return Explanation(report, err)
    report.update(certificate=_certificate(allocation), trust=_trust(ctx, allocation), facility=_facility(allocation),
                  hubs=hub_loads(ctx, hubs), decision=_decision(allocation))
    return Explanation(report)


def _identity(identity: DeviceIdentity) -> dict[str, str]:
    return {"typeCode": identity.type_code, "template": identity.template, "facility": identity.facility,
            "serial": identity.serial}


def _certificate(allocation: Allocation) -> dict[str, Any]:
    cert = allocation.certificate
    return {"serialNumber": cert.serial_hex, "issuer": cert.issuer, "notBefore": cert.not_before.isoformat(),
            "notAfter": cert.not_after.isoformat(), "source": allocation.certificate_source}


def _trust(ctx: AllocationContext, allocation: Allocation) -> dict[str, Any]:
    """The CRL decide() checked the serial against (cached by the trust store, so no second read)."""
    index = ctx.trust.revocations(allocation.ca)
    return {"ca": allocation.ca.name, "region": allocation.ca.region, "crlNumber": index.crl_number,
            "revokedCount": len(index), "nextUpdate": index.next_update.isoformat()}


def _facility(allocation: Allocation) -> dict[str, Any]:
    facility = allocation.facility
    return {"code": facility.code, "name": facility.name, "region": facility.region,
            "preferredHub": facility.preferred_hub}


def hub_loads(ctx: AllocationContext, hubs: list[str]) -> list[dict[str, Any]]:
    """The load of every linked hub as the decision saw it (the capacity snapshot is cached)."""
    snapshot = ctx.capacity.snapshot()
    loads = []
    for host in hubs:
        load = snapshot.get(host)
        loads.append({"host": host, "known": False} if load is None else {
            "host": host, "known": True, "region": load.region, "accepting": load.accepting,
            "deviceCount": load.device_count, "maxDevices": load.max_devices,
            "utilisation": round(load.utilisation, 4)})
    return loads


def _decision(allocation: Allocation) -> dict[str, Any]:
    choice = allocation.choice
    return {"hub": choice.host_name, "rule": choice.rule, "crossRegion": choice.cross_region,
            "utilisation": round(choice.utilisation, 4), "region": choice.region}


def render(report: dict[str, Any], out=None) -> None:
    """The report as the step-by-step text operators read."""
    out = out or sys.stdout

    def step(name: str, text: str) -> None:
        print(f"  {name:<12} {text}", file=out)

    identity = report["identity"]
    print(f"{report['deviceId']}:", file=out)
    step("identity", f"type {identity['typeCode']} ({identity['template']}), facility {identity['facility']}, "
                     f"serial {identity['serial']}")
    if "certificate" in report:
        cert, trust, facility = report["certificate"], report["trust"], report["facility"]
        where = "given" if cert["source"] == "dps" else "from the certificate register"
        step("certificate", f"serial {cert['serialNumber']}, valid to {cert['notAfter'][:10]} ({where})")
        step("trust", f"issued by {trust['ca']}; not on its CRL #{trust['crlNumber']} ({trust['revokedCount']} "
                      f"revoked, next update {trust['nextUpdate'][:16].replace('T', ' ')}Z)")
        step("facility", f"{facility['code']} {facility['name']}, region {facility['region']}, "
                         f"preferred hub {facility['preferredHub']}")
    for hub in report.get("hubs", []):
        text = (f"{hub['region']:<8} {hub['deviceCount']}/{hub['maxDevices']} devices ({hub['utilisation']:.0%})"
                f"{'' if hub['accepting'] else ' NOT ACCEPTING'}" if hub["known"]
                else "no statistics (not configured or not answering): cannot be chosen")
        step("hub", f"{hub['host']}: {text}")
    if "decision" in report:
        decision = report["decision"]
        step("decision", f"{decision['hub']} (rule: {decision['rule']}"
                         f"{', cross-region' if decision['crossRegion'] else ''})")
    if "refused" in report:
        refused = report["refused"]
        step("refused", f"{refused['code']} ({refused['status']}): {refused['detail'] or refused['message']}")


def main(argv: list[str] | None = None) -> int:
    """`python -m allocation.explain ...`: the same command as `onboarding explain ...`."""
    from cli.main import run_alias

    return run_alias(["explain", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
