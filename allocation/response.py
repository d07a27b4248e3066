"""The AllocationResponse DPS expects (DESIGN.md 5.1): iotHubHostName, initialTwin, payload. Pure."""

from __future__ import annotations

import datetime as dt

from allocation.decision import Allocation
from allocation.policy import POLICY_VERSION


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def initial_tags(allocation: Allocation, now: dt.datetime) -> dict:
    identity, cert = allocation.request.identity, allocation.certificate
    return {
        "sensorType": identity.template,
        "sensorTypeCode": identity.type_code,
        "facility": identity.facility,
        "region": allocation.facility.region,
        "serial": identity.serial,
        "certificate": {
            "issuer": allocation.ca.name,
            "serialNumber": cert.serial_hex,
            "notBefore": _iso(cert.not_before),
            "notAfter": _iso(cert.not_after),
        },
        "onboarding": {
            "allocatedAt": _iso(now),
            "policyVersion": POLICY_VERSION,
            "crossRegion": allocation.choice.cross_region,
        },
    }


def allocation_response(allocation: Allocation, now: dt.datetime) -> dict:
    """The 200 body. The device learns its hub's region and its facility, nothing secret."""
    return {
        "iotHubHostName": allocation.choice.host_name,
        "initialTwin": {
            "tags": initial_tags(allocation, now),
            "properties": {"desired": {"onboarding": {"state": "awaitingConfiguration"}}},
        },
        "payload": {
            "facility": allocation.facility.code,
            "region": allocation.facility.region,
            "hubRegion": allocation.choice.region,
        },
    }
