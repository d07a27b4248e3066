from local.fleet.verify import configuration_errors, expected_sections

TEMPLATE = {"templateVersion": "1", "telemetry": {"intervalSeconds": 60, "unit": "celsius"},
            "alerts": {"high": 85.0, "low": -20.0, "spike": 5}, "firmware": {"channel": "stable"},
            "diagnostics": {"logLevel": "info"}}


def test_override_order_and_null_deletion():
    overrides = {"*": {"diagnostics": {"logLevel": "debug"}, "alerts": {"high": 80.0}},
                 "temperature": {"alerts": {"high": 70.0, "spike": None}, "telemetry": {"intervalSeconds": 30}}}
    expected = expected_sections(TEMPLATE, overrides, "temperature")
    assert expected == {"telemetry": {"intervalSeconds": 30, "unit": "celsius"}, "alerts": {"high": 70.0, "low": -20.0},
                        "firmware": {"channel": "stable"}, "diagnostics": {"logLevel": "debug"}}
    assert "templateVersion" not in expected


def test_other_types_overrides_do_not_apply():
    assert expected_sections(TEMPLATE, {"pressure": {"alerts": {"high": 1.0}}}, "temperature")["alerts"]["high"] == 85.0


def test_differences_are_reported_per_section():
    expected = expected_sections(TEMPLATE, {}, "temperature")
    assert configuration_errors(expected, expected) == []
    wrong = {**expected, "alerts": {"high": 1}}
    assert [e.split(":")[0] for e in configuration_errors(wrong, expected)] == ["alerts"]
