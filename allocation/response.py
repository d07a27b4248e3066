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
    """The 200 body. The device learns its hub's region and its facility, nothing secret.

    A device that provisions again (a renewed certificate: docs/contracts.md 7) under a policy that migrates its data
    gets no initialTwin: an initialTwin in the answer is what DPS sets on the device, so it would put a configured
    sensor back to awaitingConfiguration. Its twin stays as the hub has it; the renewal collector brings its
    certificate tags up to date. Under "reset to initial config" (migrateDeviceData false) it gets the fresh one."""
    body: dict = {"iotHubHostName": allocation.choice.host_name}
    request = allocation.request
    if not (request.reprovisioning and request.migrate_device_data):
        body["initialTwin"] = {
            "tags": initial_tags(allocation, now),
            "properties": {"desired": {"onboarding": {"state": "awaitingConfiguration"}}},
        }
    body["payload"] = {
        "facility": allocation.facility.code,
        "region": allocation.facility.region,
        "hubRegion": allocation.choice.region,
    }
    return body
