import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocation.request import MAX_BODY_BYTES, parse_allocation_request
from shared.errors import OnboardingError


def body(**context) -> dict:
    ctx = {"registrationId": "sensor-temp-FAC03-SN482019", "x509": {}}
    ctx.update(context)
    return {"enrollmentGroup": {"enrollmentGroupId": "g", "capabilities": {"iotEdge": True}},
            "deviceRuntimeContext": ctx, "linkedHubs": ["a.azure-devices.net"]}


def parse(value) -> object:
    return parse_allocation_request(value if isinstance(value, bytes) else json.dumps(value).encode())


def code_of(value) -> str:
    with pytest.raises(OnboardingError) as err:
        parse(value)
    return err.value.code


def test_minimal_group_request():
    request = parse(body())
    assert request.enrollment_kind == "group" and request.iot_edge is True
    assert request.identity.facility == "FAC03" and request.attestation == "x509"
    assert request.certificate is None and request.current_hub is None


def test_payload_and_current_hub_are_read():
    request = parse(body(payload={"model": "TX"}, currentIotHubHostName="h", currentDeviceId="d"))
    assert (request.device_payload, request.current_hub, request.current_device_id) == ({"model": "TX"}, "h", "d")


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b"null", b'"x"', b"{}", b"\xff\xfe"])
def test_not_an_allocation_request(raw):
    assert code_of(raw) == "invalid_request"


def test_one_megabyte_body_is_refused_before_parsing():
    assert code_of(b"{" + b" " * (1024 * 1024) + b"}") == "invalid_request"
    assert MAX_BODY_BYTES < 1024 * 1024


@pytest.mark.parametrize("mutate", [
    lambda b: b.pop("linkedHubs"),
    lambda b: b.update(linkedHubs=[]),
    lambda b: b.update(linkedHubs="a"),
    lambda b: b.update(linkedHubs=[1]),
    lambda b: b.pop("deviceRuntimeContext"),
    lambda b: b.update(deviceRuntimeContext=[]),
    lambda b: b.pop("enrollmentGroup"),
    lambda b: b.update(individualEnrollment={"registrationId": "x"}),
    lambda b: b["deviceRuntimeContext"].pop("x509"),
    lambda b: b["deviceRuntimeContext"].update(tpm={}),
    lambda b: b["deviceRuntimeContext"].update(x509="cert"),
    lambda b: b["deviceRuntimeContext"].update(payload=[1]),
    lambda b: b["deviceRuntimeContext"].update(payload={"x": "y" * 5000}),
    lambda b: b["deviceRuntimeContext"].update(registrationId=7),
    lambda b: b["deviceRuntimeContext"].update(currentIotHubHostName=""),
])
def test_wrong_shapes_are_invalid_request(mutate):
    value = body()
    mutate(value)
    assert code_of(value) == "invalid_request"


@pytest.mark.parametrize("rid,code", [
    ("sensor-temp-FAC03-SN1'; DROP TABLE facilities;--", "invalid_registration_id"),
    ("sensor-temp-FAC03-../../etc/passwd", "invalid_registration_id"),
    ("sensor-temp-FAC03-SN\u00e9", "invalid_registration_id"),
    ("s" * 10_000, "invalid_request"),
    ("sensor-humid-FAC03-SN1", "unknown_sensor_type"),
])
def test_hostile_registration_ids(rid, code):
    assert code_of(body(registrationId=rid)) == code


def test_bad_certificate_is_its_own_code():
    assert code_of(body(x509={"clientCertificate": "bm90IGEgY2VydA=="})) == "certificate_invalid"
    assert code_of(body(x509={"clientCertificate": "%%%"})) == "certificate_invalid"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_never_escapes_as_anything_but_a_catalogue_refusal(value):
    try:
        parse(value)
    except OnboardingError as err:
        assert 400 <= err.status < 500


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["registrationId", "x509", "symmetricKey", "tpm", "payload",
                                        "currentIotHubHostName", "currentDeviceId"]), json_values))
def test_arbitrary_runtime_contexts_are_refused_cleanly(context):
    value = {"enrollmentGroup": {"enrollmentGroupId": "g"}, "deviceRuntimeContext": context,
             "linkedHubs": ["a.azure-devices.net"]}
    try:
        parse(value)
    except OnboardingError as err:
        assert 400 <= err.status < 500


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_refused_cleanly(raw):
    try:
        parse(raw)
    except OnboardingError as err:
        assert err.code == "invalid_request" or 400 <= err.status < 500
