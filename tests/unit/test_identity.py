import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import OnboardingError
from shared.identity import SENSOR_TYPES, format_device_id, parse_device_id


def test_parses_the_reference_example():
    identity = parse_device_id("sensor-temp-FAC03-SN482019")
    assert (identity.type_code, identity.template, identity.facility, identity.serial) == (
        "temp", "temperature", "FAC03", "SN482019")
    assert identity.device_id == "sensor-temp-FAC03-SN482019"


@pytest.mark.parametrize("code,template", sorted(SENSOR_TYPES.items()))
def test_every_type_code_maps_to_its_template(code, template):
    assert parse_device_id(f"sensor-{code}-FAC01-A1").template == template


@pytest.mark.parametrize("value", [
    "", None, 42, "sensor-temp-FAC03", "sensor-temp-FAC03-SN48-2019", "Sensor-temp-FAC03-SN1",
    "sensor-temp-fac03-SN1", "sensor-temp-FAC03-SN1 ", " sensor-temp-FAC03-SN1", "sensor-temp-FAC03-SN1\n",
    "sensor-temp-FAC03-SN1'; DROP TABLE facilities;--", "sensor-temp-FAC03-\uff33\uff2e1",
    "sensor-temp-FAC03-SN1/../x", "x" * 500, "sensor-temp-FAC03-" + "9" * 33,
])
def test_refuses_anything_outside_the_pattern(value):
    with pytest.raises(OnboardingError) as err:
        parse_device_id(value)
    assert err.value.code == "invalid_registration_id"


def test_unknown_type_code_has_its_own_error():
    with pytest.raises(OnboardingError) as err:
        parse_device_id("sensor-humid-FAC03-SN1")
    assert err.value.code == "unknown_sensor_type"
    assert err.value.status == 400


def test_type_table_is_data():
    assert parse_device_id("sensor-humid-FAC03-SN1", {"humid": "humidity"}).template == "humidity"


@given(
    st.sampled_from(sorted(SENSOR_TYPES)),
    st.from_regex(r"[A-Z][A-Z0-9]{1,15}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True),
)
def test_format_and_parse_round_trip(code, facility, serial):
    parsed = parse_device_id(format_device_id(code, facility, serial))
    assert (parsed.type_code, parsed.facility, parsed.serial) == (code, facility, serial)
