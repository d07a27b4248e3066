"""Preview of a fleet change (twin_setup/diff.py): which installed sensors would change, which fields, which would
no longer fit the twin, and which would fail validation; built with twin setup's own merge and size rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from shared.identity import parse_device_id
from twin_setup.configuration import build_configuration, parse_override, parse_template
from twin_setup.diff import Sources, changed_fields, diff_fleet
from twin_setup.plan import TwinView
from twin_setup.settings import TwinLimits

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "templates"
LIMITS = TwinLimits()
ESSENTIAL = ("telemetry", "firmware", "diagnostics")


def template(name: str = "temperature", **changes) -> tuple[dict, object]:
    document = json.loads((TEMPLATES / f"{name}-sensor.json").read_text())
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = document
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return document, parse_template(name, json.dumps(document).encode(), LIMITS, "etag")


def installed(device_id: str, sources: Sources, storage: str = "twin") -> tuple[str, TwinView]:
    identity = parse_device_id(device_id)
    config = sources.configuration(identity, LIMITS)
    tags = {"sensorType": identity.template, "sensorTypeCode": identity.type_code, "facility": identity.facility,
            "serial": identity.serial,
            "onboarding": {"status": "configured", "configurationHash": config.hash, "storage": storage}}
    return "hub1", TwinView(device_id, "e", tags, copy.deepcopy(config.desired), False)


def url(device_id: str, config_hash: str) -> str:
    return f"https://st/device-configurations/{device_id}/{config_hash}.json"


def test_a_template_change_counts_sensors_per_facility_and_names_the_fields():
    _, current = template()
    document, candidate = template(templateVersion="9.9.9")
    document["telemetry"]["intervalSeconds"] = 7
    candidate = parse_template("temperature", json.dumps(document).encode(), LIMITS, "e2")
    before = Sources({"temperature": current}, {"FAC01": [], "FAC03": []})
    after = Sources({"temperature": candidate}, before.overrides)
    twins = [installed(f"sensor-temp-FAC0{f}-SN{i:04d}", before) for f in (1, 3) for i in range(3)]
    twins.append(installed("sensor-press-FAC01-SN0001", Sources({"pressure": template("pressure")[1]},
                                                                {"FAC01": []})))
    diff = diff_fleet(twins, before, after, LIMITS, ESSENTIAL, url,
                      selected=lambda identity: identity.template == "temperature")
    result = diff.as_dict()
    assert result["changing"] == 6 and result["errors"] == 0 and result["offloaded"] == 0
    assert [(g["facility"], g["template"], g["changing"]) for g in result["groups"]] == [
        ("FAC01", "temperature", 3), ("FAC03", "temperature", 3)]
    assert result["groups"][0]["fields"] == ["telemetry.intervalSeconds", "templateVersion"]


def test_an_unchanged_template_changes_nothing():
    _, current = template()
    sources = Sources({"temperature": current}, {"FAC01": []})
    twins = [installed("sensor-temp-FAC01-SN0001", sources)]
    assert diff_fleet(twins, sources, sources, LIMITS, ESSENTIAL, url).changing == 0


def test_a_sensor_whose_document_no_longer_fits_the_twin_is_named():
    _, current = template()
    document, _ = template()
    document["alerts"]["notes"] = ["x" * 4000] * 7  # about 28 KB: over the 24 KB budget
    candidate = parse_template("temperature", json.dumps(document).encode(), LIMITS, "e2")
    before = Sources({"temperature": current}, {"FAC01": []})
    twins = [installed("sensor-temp-FAC01-SN0001", before)]
    diff = diff_fleet(twins, before, Sources({"temperature": candidate}, before.overrides), LIMITS, ESSENTIAL, url)
    assert diff.as_dict()["groups"][0]["offloaded"] == ["sensor-temp-FAC01-SN0001"]


def test_an_override_that_breaks_the_merged_document_is_a_validation_error_per_sensor():
    _, current = template()
    before = Sources({"temperature": current}, {"FAC03": []})
    bad = parse_override("FAC03", "temperature", json.dumps({"telemetry": {"bad key": 1}}))
    after = Sources(before.templates, {"FAC03": [bad]})
    twins = [installed("sensor-temp-FAC03-SN0001", before)]
    result = diff_fleet(twins, before, after, LIMITS, ESSENTIAL, url).as_dict()
    assert result["changing"] == 0 and result["errors"] == 1
    assert result["groups"][0]["errors"]["sensor-temp-FAC03-SN0001"].startswith("invalid_override:")


def test_a_sensor_that_missed_an_earlier_change_counts_even_if_the_sources_agree():
    _, current = template()
    sources = Sources({"temperature": current}, {"FAC01": []})
    hub, twin = installed("sensor-temp-FAC01-SN0001", sources)
    stale = TwinView(twin.device_id, twin.etag, {**twin.tags, "onboarding": {"status": "configured",
                                                                                "configurationHash": "old"}},
                     twin.desired, False)
    assert diff_fleet([(hub, stale)], sources, sources, LIMITS, ESSENTIAL, url).changing == 1


def test_changed_fields_covers_added_removed_and_changed_leaves():
    assert changed_fields({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "d": 3}}) == {"a.c", "a.d"}
    assert changed_fields(None, {"a": [1]}) == {"a"}
    identity = parse_device_id("sensor-temp-FAC01-SN0001")
    config = build_configuration(identity, template()[1], [], LIMITS)
    assert changed_fields(config.document, config.document) == set()
