"""The AllocationResponse DPS expects (docs/contracts.md 1): iotHubHostName, initialTwin, payload. Pure."""

from __future__ import annotations

import datetime as dt

from allocation.decision import Allocation
from allocation.policy import POLICY_VERSION
from shared.tags import allocation_tags


def initial_tags(allocation: Allocation, now: dt.datetime) -> dict:
    cert = allocation.certificate
    return allocation_tags(allocation.request.identity, allocation.facility.region, allocation.ca.name,
                           cert.serial_hex, cert.not_before, cert.not_after, now, POLICY_VERSION,
                           allocation.choice.cross_region)


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
