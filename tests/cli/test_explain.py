"""allocation.explain runs decide() itself, with a reservation that takes nothing, and reports what it returns."""

from __future__ import annotations

import datetime as dt
import inspect
import io
from types import SimpleNamespace

import pytest

from allocation.certificate import CertificateDetails
from allocation.decision import AllocationContext, decide
from allocation.explain import explain, render
from allocation.policy import HubLoad
from allocation.request import AllocationRequest
from shared.certificates import CertificateRecord, CertificateStanding
from shared.errors import OnboardingError
from shared.facilities import Facility
from shared.identity import parse_device_id

WEST, CENTRAL = "hub-west.azure-devices.net", "hub-central.azure-devices.net"
CN = "sensor-temp-FAC03-SN1"
ISSUER = "CN=Intermediate CA west"
NOW = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


class Index:
    crl_number, next_update = 7, NOW + dt.timedelta(days=7)

    def __len__(self) -> int:
        return 2


class Trust:
    def __init__(self, refusal: str | None = None):
        self.refusal = refusal

    def check(self, certificate):
        if self.refusal:
            raise OnboardingError(self.refusal, f"serial {certificate.serial_hex}")
        return SimpleNamespace(name="intermediate-ca-west", region="west")

    def revocations(self, ca):
        return Index()


class Capacity:
    def __init__(self, west_devices: int = 10):
        self.reserved: list[str] = []
        self.loads = {WEST: HubLoad(WEST, "west", True, west_devices, 100),
                      CENTRAL: HubLoad(CENTRAL, "central", True, 50, 100)}

    def snapshot(self):
        return self.loads

    def reserve(self, host: str) -> bool:
        self.reserved.append(host)
        return True


class Facilities:
    def __init__(self, fault: bool = False):
        self.fault = fault

    def get(self, code: str) -> Facility:
        if self.fault:
            raise OnboardingError("dependency_unavailable", "facility lookup failed (OperationalError)")
        return Facility(code, "Reno Machining", "west", WEST, "m@example.com", True)


def context(trust=None, capacity=None, facilities=None, on_record=()) -> AllocationContext:
    return AllocationContext(trust or Trust(), facilities or Facilities(), capacity or Capacity(),
                             lambda device_id: list(on_record), 0.9, now=lambda: NOW)


def standing(status: str = "active", reason: str | None = None) -> CertificateStanding:
    cert = certificate()
    return CertificateStanding(CertificateRecord(cert.issuer, cert.serial_hex, CN, cert.not_before, cert.not_after,
                                                 status), reason)


def certificate(cn: str = CN) -> CertificateDetails:
    return CertificateDetails(cn, ISSUER, 0x1F, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=730))


def test_decide_requires_the_reservation_by_keyword_with_no_default():
    reserve = inspect.signature(decide).parameters["reserve"]
    assert reserve.default is inspect.Parameter.empty
    assert reserve.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def test_the_decision_and_each_step_come_from_decide_and_nothing_is_reserved():
    capacity = Capacity()
    result = explain(CN, certificate(), [WEST, CENTRAL], ctx=context(capacity=capacity))
    assert result.refusal is None and capacity.reserved == []
    report = result.report
    assert report["decision"] == {"hub": WEST, "rule": "preferred", "crossRegion": False, "utilisation": 0.1,
                                  "region": "west"}
    assert report["certificate"]["source"] == "dps" and report["certificate"]["serialNumber"] == "1F"
    assert report["trust"] == {"ca": "intermediate-ca-west", "region": "west", "crlNumber": 7, "revokedCount": 2,
                               "nextUpdate": Index.next_update.isoformat()}
    assert [h["host"] for h in report["hubs"]] == [WEST, CENTRAL]
    out = io.StringIO()
    render(report, out)
    text = out.getvalue()
    for step in ("identity", "certificate", "trust", "facility", "hub", "decision"):
        assert f"\n  {step:<12} " in text
    assert "not on its CRL #7" in text and f"decision     {WEST} (rule: preferred)" in text


def test_explain_and_the_webhook_choose_alike_where_the_webhook_would_count_the_device():
    capacity = Capacity(west_devices=95)  # the preferred hub is above the threshold
    explained = explain(CN, certificate(), [WEST, CENTRAL], ctx=context(capacity=capacity)).report["decision"]
    request_ctx = context(capacity=capacity)
    request = AllocationRequest(CN, parse_device_id(CN), "group", "g", "x509", False, (WEST, CENTRAL), None, None,
                                None, certificate())
    allocated = decide(request, request_ctx, reserve=capacity.reserve)
    assert explained["hub"] == allocated.choice.host_name and explained["rule"] == allocated.choice.rule
    assert capacity.reserved == [allocated.choice.host_name]  # only the webhook's call took a place


def test_without_a_certificate_the_one_on_record_is_used():
    report = explain(CN, None, [WEST], ctx=context(on_record=[standing()])).report
    assert report["certificate"]["source"] == "register" and report["certificate"]["serialNumber"] == "1F"


def test_without_a_certificate_an_outstanding_revocation_is_explained_as_the_refusal():
    result = explain(CN, None, [WEST], ctx=context(on_record=[standing("revoked", "keyCompromise")]))
    assert result.refusal.code == "revoked_certificate_outstanding"


@pytest.mark.parametrize(("ctx", "code"), [
    (context(trust=Trust("certificate_revoked")), "certificate_revoked"),
    (context(), "certificate_missing"),  # no --cert and nothing on record
])
def test_a_refusal_is_reported_with_its_code(ctx, code):
    cert = certificate() if code == "certificate_revoked" else None
    result = explain(CN, cert, [WEST], ctx=ctx)
    assert result.refusal.code == code and result.report["refused"]["code"] == code
    assert "decision" not in result.report
    out = io.StringIO()
    render(result.report, out)
    assert f"  refused      {code} (" in out.getvalue()


def test_no_hub_capacity_shows_the_loads_that_led_to_it():
    capacity = Capacity(west_devices=100)
    capacity.loads[CENTRAL] = HubLoad(CENTRAL, "central", False, 0, 100)
    result = explain(CN, certificate(), [WEST, CENTRAL], ctx=context(capacity=capacity))
    assert result.refusal.code == "no_hub_capacity"
    assert [h["host"] for h in result.report["hubs"]] == [WEST, CENTRAL]


def test_a_fault_is_raised_not_reported_as_the_devices_answer():
    with pytest.raises(OnboardingError) as raised:
        explain(CN, certificate(), [WEST], ctx=context(facilities=Facilities(fault=True)))
    assert raised.value.code == "dependency_unavailable"


def test_a_cn_that_is_no_device_id_is_bad_input():
    with pytest.raises(OnboardingError) as raised:
        explain("not-a-sensor", ctx=context())
    assert raised.value.code == "invalid_registration_id"
