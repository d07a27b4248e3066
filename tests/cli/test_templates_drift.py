"""`onboarding templates drift [--apply]`: read-only by default (exit 2, configuration_drift, when sensors differ),
--apply re-applies through twin setup's writer; bad input is one line with a code. Over the in-memory fleet of
tests/unit/test_config_drift.py."""

from __future__ import annotations

import json

import pytest

from cli import main as cli_main
from tests.unit.test_config_drift import fleet  # noqa: F401 - fixture
from tests.unit.test_twin_service import HOST


@pytest.fixture
def drifted(fleet, monkeypatch):  # noqa: F811
    _h, hub, _templates, _changes, _sent, devices, drift, _db = fleet
    monkeypatch.setattr("shared.bootstrap.services", lambda: None)
    monkeypatch.setattr("twin_setup.drift.build_drift", lambda svc: drift)
    hub.update_twin(HOST, devices[0], {"properties": {"desired": {"alerts": {"high": 1.0}}}}, None)
    return hub, devices


def test_drift_reports_without_writing_and_exits_2_with_its_code(drifted, capsys):
    hub, devices = drifted
    writes = dict(hub.writes)
    assert cli_main.main(["templates", "drift"]) == 2
    out, err = capsys.readouterr()
    assert "12 sensors checked, 1 drifted (missed 0, edited 1)" in out and devices[0] in out
    assert err.strip().startswith("onboarding: error configuration_drift: 1 sensors differ") and "--apply" in err
    assert hub.writes == writes


def test_drift_apply_re_applies_and_exits_0(drifted, capsys):
    hub, devices = drifted
    assert cli_main.main(["templates", "drift", "--apply", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["drifted"] == 1 and data["repaired"] == 1 and data["sensors"][0]["outcome"] == "configured"
    assert hub.desired(devices[0])["alerts"]["high"] != 1.0
    assert cli_main.main(["templates", "drift"]) == 0


def test_drift_refuses_a_facility_that_is_not_a_code(drifted, capsys):
    assert cli_main.main(["templates", "drift", "--facility", "x' OR 1=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onboarding: error invalid_request:") and len(err.strip().splitlines()) == 1
