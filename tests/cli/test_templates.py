"""`onboarding templates diff FILE` and `onboarding overrides diff ...`: what an operator sees before a change goes
out, over the rollout service with in-memory hub and Blob fakes (tests/unit/test_rollout_service.py); nothing is
written. Refusals are one line `onboarding: error <code>: <message>`, exit 2."""

from __future__ import annotations

import json

import pytest

from cli import main as cli_main
from tests.unit.test_rollout_service import world  # noqa: F401 - fixture
from tests.unit.test_twin_service import TEMPLATES


@pytest.fixture
def service(world, monkeypatch):  # noqa: F811
    _h, hub, _templates, changes, sent, devices = world
    monkeypatch.setattr("cli.templates.changes", lambda: changes)
    monkeypatch.setattr("cli.overrides.changes", lambda: changes)
    return hub, changes, sent, devices


def template_file(tmp_path, **alerts) -> str:
    document = json.loads((TEMPLATES / "temperature-sensor.json").read_text())
    document["templateVersion"] = "1.1.0"
    document["alerts"].update(alerts)
    path = tmp_path / "temperature-sensor.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_templates_diff_prints_sensors_per_facility_and_the_fields_and_writes_nothing(service, tmp_path, capsys):
    hub, changes, sent, devices = service
    assert cli_main.main(["templates", "diff", template_file(tmp_path, low=-30.0)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "template temperature 1.0.0 -> 1.1.0: 20 sensors would change, 0 would move to Blob, " \
                     "0 would fail validation"
    assert out[1].split() == ["FAC01", "temperature", "7", "of", "7", "change"]
    assert out[2].strip() == "fields: alerts.low, templateVersion"
    assert all(hub.writes[d] == 1 for d in devices) and sent == []
    assert changes.store.recent() == []


def test_templates_diff_of_an_invalid_template_exits_2_with_its_code(service, tmp_path, capsys):
    path = tmp_path / "temperature-sensor.json"
    path.write_text(json.dumps({"templateVersion": "2", "telemetry": {"a.b": 1}}))
    assert cli_main.main(["templates", "diff", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("template temperature ? -> ?: does not validate (invalid_template)")
    assert captured.err.startswith("onboarding: error invalid_template: temperature-sensor.json:")
    assert len(captured.err.strip().splitlines()) == 1


def test_a_file_that_names_no_template_is_refused(service, tmp_path, capsys):
    path = tmp_path / "mystery.json"
    path.write_text("{}")
    assert cli_main.main(["templates", "diff", str(path)]) == 2
    assert capsys.readouterr().err.startswith("onboarding: error unknown_template: 'mystery.json' is not a template")


def test_overrides_diff_shows_one_facility_and_a_broken_override_exits_2(service, tmp_path, capsys):
    assert cli_main.main(["overrides", "diff", "--facility", "FAC03", "--type", "temperature", "--overrides",
                          '{"alerts": {"low": -40.0}}', "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changing"] == 6 and [g["facility"] for g in data["groups"]] == ["FAC03"]
    assert "alerts.low" in data["groups"][0]["fields"]
    bad = tmp_path / "o.json"
    bad.write_text('{"telemetry": {"bad key": 1}}')
    assert cli_main.main(["overrides", "diff", "--facility", "FAC03", "--type", "temperature", "--overrides",
                          f"@{bad}"]) == 2
    assert capsys.readouterr().err.startswith("onboarding: error invalid_override:")
