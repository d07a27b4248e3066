"""Templates, overrides, twin document rules and the merged configuration (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.seed.data import OVERRIDES
from shared.errors import OnboardingError
from shared.identity import SENSOR_TYPES, parse_device_id
from twin_setup.configuration import (
    applicable,
    build_configuration,
    document_problem,
    explain_configuration,
    parse_override,
    parse_template,
)
from twin_setup.document import DocumentError, check_twin_section, content_hash, size_of
from twin_setup.settings import TwinLimits

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "templates"
LIMITS = TwinLimits()


def template_bytes(name: str) -> bytes:
    return (TEMPLATES / f"{name}-sensor.json").read_bytes()


def template_doc(name: str) -> dict:
    return json.loads(template_bytes(name))


def seed_overrides(facility: str) -> list:
    return [parse_override(f, t, json.dumps(o)) for f, t, o in OVERRIDES if f == facility]


# -- the repository's templates ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(set(SENSOR_TYPES.values())))
def test_every_sensor_type_has_a_valid_template_in_the_repository(name):
    template = parse_template(name, template_bytes(name), LIMITS, '"0x1"')
    assert template.version == "1.0.0" and template.etag == '"0x1"'


def test_the_gateway_template_edge_manifest_is_accepted_although_its_keys_are_not_twin_names():
    config = build_configuration(parse_device_id("sensor-gw-FAC01-G1"),
                                 parse_template("gateway", template_bytes("gateway"), LIMITS), [], LIMITS)
    assert set(config.edge) == {"$edgeAgent", "$edgeHub"}
    assert "edge" not in config.desired and "$edgeAgent" not in json.dumps(config.desired)
    assert config.edge_hash == content_hash(config.edge)


# -- template validation -----------------------------------------------------------------------------------
def problem_with(change) -> str | None:
    doc = template_doc("temperature")
    change(doc)
    return document_problem(doc, LIMITS, "temperature")


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.update(telemtry={"x": 1}), "unknown top-level section"),
    (lambda d: d.pop("alerts"), "'alerts' is missing"),
    (lambda d: d.update(alerts=[1]), "'alerts' is missing or not an object"),
    (lambda d: d.pop("templateVersion"), "templateVersion"),
    (lambda d: d.update(templateVersion="1.0 beta"), "templateVersion"),
    (lambda d: d.update(sensorType="pressure"), "does not match template 'temperature'"),
    (lambda d: d["alerts"].update({"high.max": 1}), "alerts.high.max: name contains '.'"),
    (lambda d: d["alerts"].update({"$high": 1}), "name contains '$'"),
    (lambda d: d["alerts"].update({"very high": 1}), "name contains ' '"),
    (lambda d: d["alerts"].update({"tab\there": 1}), "name contains"),
    (lambda d: d["alerts"].update({"k" * 1025: 1}), "longer than 1024 bytes"),
    (lambda d: d["telemetry"].update(unit="x" * 4097), "string longer than 4096 bytes"),
    (lambda d: d["telemetry"].update(batchSize=2**53), "integer outside"),
    (lambda d: d["telemetry"].update(unit=None), "null"),
    (lambda d: d["telemetry"].update(list=[1, None]), "null inside an array"),
    (lambda d: d.update(edge={"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}), "lacks $edgeHub"),
    (lambda d: d.update(edge={"modules": {}}), "edge must be"),
    (lambda d: d.update(edge={"modulesContent": {"$edgeAgent": {"properties.desired": {}},
                                                 "$edgeHub": {"properties.desired": {"a.b": 1}}}}), "a.b"),
    (lambda d: d.update(edge={"modulesContent": {"$edgeAgent": {"desired": {}},
                                                 "$edgeHub": {"properties.desired": {}}}}), "properties.desired"),
])
def test_template_problems_are_named(change, expected):
    problem = problem_with(change)
    assert problem is not None and expected in problem, problem


def nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for level in range(levels, 0, -1):
        value = {f"l{level}": value}
    return value


def test_depth_limit_counts_from_the_desired_properties_root():
    check_twin_section({"alerts": nested(9)}, LIMITS)  # alerts is level 1: ten levels in all
    with pytest.raises(DocumentError, match="deeper than 10"):
        check_twin_section({"alerts": nested(10)}, LIMITS)


def test_parse_template_refuses_non_json_and_non_objects():
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        with pytest.raises(OnboardingError) as err:
            parse_template("temperature", raw, LIMITS)
        assert err.value.code == "invalid_template"
        assert "temperature-sensor.json" in err.value.detail


def test_size_counts_as_iot_hub_documents_it():
    assert size_of({"ab": "cd"}) == 4
    assert size_of({"n": 1, "f": 1.5, "b": True}) == 3 + 16 + 4
    assert size_of({"o": {"x": "é"}}) == 1 + 1 + 2  # UTF-8 bytes
    assert size_of({"c": "a\u0001b"}) == 3  # control characters are not counted
    assert size_of({"l": [1, "ab"]}) == 1 + 8 + 2


# -- overrides ---------------------------------------------------------------------------------------------
def test_override_rows_that_are_not_objects_or_touch_metadata_carry_their_problem():
    assert parse_override("FAC01", "*", "{bad").problem == "not a JSON object"
    assert parse_override("FAC01", "*", "[1]").problem == "not a JSON object"
    assert "templateVersion" in parse_override("FAC01", "*", '{"templateVersion": "9"}').problem
    assert parse_override("FAC01", "*", '{"alerts": {"high": null}}').document == {"alerts": {"high": None}}


def test_applicable_orders_star_before_the_type_and_ignores_other_types():
    rows = [parse_override("FAC07", t, "{}") for t in ("vibration", "*", "pressure")]
    assert [o.sensor_type for o in applicable(rows, "vibration")] == ["*", "vibration"]
    assert [o.sensor_type for o in applicable(rows, "flow")] == ["*"]


# -- the merged configuration --------------------------------------------------------------------------------
def configure(device_id: str, facility_rows: list):
    identity = parse_device_id(device_id)
    template = parse_template(identity.template, template_bytes(identity.template), LIMITS)
    return build_configuration(identity, template, applicable(facility_rows, identity.template), LIMITS)


def test_seed_overrides_land_where_documented():
    fac03 = configure("sensor-temp-FAC03-SN1", seed_overrides("FAC03"))
    assert fac03.desired["telemetry"]["intervalSeconds"] == 30 and fac03.desired["alerts"]["high"] == 70.0
    assert fac03.desired["diagnostics"]["logLevel"] == "debug"
    assert fac03.layers == ("template temperature", "override FAC03/*", "override FAC03/temperature")
    fac11 = configure("sensor-press-FAC11-SN1", seed_overrides("FAC11"))
    assert "spikeThreshold" not in fac11.desired["alerts"] and fac11.desired["alerts"]["high"] == 1000.0
    plain = configure("sensor-flow-FAC01-SN1", seed_overrides("FAC01"))
    assert plain.desired == {k: template_doc("flow")[k] for k in ("telemetry", "alerts", "firmware", "diagnostics")}


def test_hash_depends_on_content_not_on_the_device():
    one = configure("sensor-temp-FAC03-SN1", seed_overrides("FAC03"))
    two = configure("sensor-temp-FAC03-SN2", seed_overrides("FAC03"))
    other = configure("sensor-temp-FAC01-SN1", seed_overrides("FAC01"))
    assert one.hash == two.hash != other.hash


def test_an_invalid_override_fails_only_the_devices_it_applies_to():
    rows = [parse_override("FAC05", "pressure", "{oops"), parse_override("FAC05", "*", '{"alerts": {"x": 1}}')]
    with pytest.raises(OnboardingError) as err:
        configure("sensor-press-FAC05-SN1", rows)
    assert err.value.code == "invalid_override" and "FAC05/pressure" in err.value.detail
    assert configure("sensor-temp-FAC05-SN1", rows).desired["alerts"]["x"] == 1


@pytest.mark.parametrize("override", [
    {"alerts": {"bad.key": 1}},
    {"alerts": None},
    {"telemetry": {"unit": "x" * 5000}},
])
def test_an_override_cannot_make_the_document_invalid(override):
    with pytest.raises(OnboardingError) as err:
        configure("sensor-temp-FAC05-SN1", [parse_override("FAC05", "*", json.dumps(override))])
    assert err.value.code == "invalid_override"
    assert "FAC05/*" in err.value.detail


def test_explain_gives_the_same_configuration_as_build():
    identity = parse_device_id("sensor-vib-FAC07-SN9")
    template = parse_template("vibration", template_bytes("vibration"), LIMITS)
    rows = applicable(seed_overrides("FAC07"), "vibration")
    config, merged = explain_configuration(identity, template, rows, LIMITS)
    assert config == build_configuration(identity, template, rows, LIMITS)
    assert merged.sources[("alerts", "velocityRmsWarning")] == "override FAC07/vibration"
    assert merged.sources[("firmware", "channel")] == "override FAC07/*"
    assert merged.sources[("alerts", "peakAcceleration")] == "template vibration"
