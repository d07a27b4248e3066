"""The IoT Hub query language subset of the emulator: parsing and evaluation over twin documents."""

from __future__ import annotations

import pytest

from local.iothub.query import QueryError, parse, run


def twin(device_id: str, **fields) -> dict:
    doc = {
        "deviceId": device_id,
        "status": "enabled",
        "capabilities": {"iotEdge": False},
        "tags": {},
        "properties": {"desired": {"$version": 1}, "reported": {"$version": 1}},
    }
    doc.update(fields)
    return doc


TWINS = [
    twin(
        "sensor-temp-FAC01-SN1",
        tags={"facility": "FAC01", "type": "temp", "floor": 1},
        properties={
            "desired": {"interval": 30},
            "reported": {"certificate": {"notAfter": "2027-01-15T00:00:00Z"}, "temperature": 21.5, "fw": None},
        },
    ),
    twin(
        "sensor-temp-FAC02-SN2",
        tags={"facility": "FAC02", "type": "temp", "floor": 3},
        properties={
            "desired": {},
            "reported": {"certificate": {"notAfter": "2028-03-01T00:00:00Z"}, "temperature": 30},
        },
    ),
    twin(
        "sensor-vib-FAC01-SN3",
        status="disabled",
        tags={"facility": "FAC01", "type": "vib", "floor": "2"},
        properties={"desired": {}, "reported": {}},
    ),
    twin("gw-FAC01-1", capabilities={"iotEdge": True}, tags={"facility": "FAC01", "type": "gw"}),
]


def where(condition: str, select: str = "*") -> str:
    """Query text with a WHERE clause (IoT Hub query language, not SQL)."""
    return " ".join(("SELECT", select, "FROM devices WHERE", condition))


def ids(text: str) -> list[str]:
    return [item["deviceId"] for item in run(parse(text), TWINS)]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("tags.facility = 'FAC01'", ["sensor-temp-FAC01-SN1", "sensor-vib-FAC01-SN3", "gw-FAC01-1"]),
        ("tags.facility = 'FAC01' AND tags.type = 'temp'", ["sensor-temp-FAC01-SN1"]),
        ("tags.type = 'vib' OR capabilities.iotEdge = true", ["sensor-vib-FAC01-SN3", "gw-FAC01-1"]),
        ("NOT (tags.facility = 'FAC01') AND status = 'enabled'", ["sensor-temp-FAC02-SN2"]),
        ("tags.facility = 'FAC01' AND (tags.type = 'vib' OR tags.type = 'gw')", ["sensor-vib-FAC01-SN3", "gw-FAC01-1"]),
        ("status != 'enabled'", ["sensor-vib-FAC01-SN3"]),
        ("status <> 'disabled' AND tags.type = 'gw'", ["gw-FAC01-1"]),
        # ISO-8601 strings compare as strings, which orders them in time: the daily expiry scan.
        ("properties.reported.certificate.notAfter < '2027-02-01T00:00:00Z'", ["sensor-temp-FAC01-SN1"]),
        ("properties.reported.certificate.notAfter >= '2027-02-01T00:00:00Z'", ["sensor-temp-FAC02-SN2"]),
        ("properties.reported.temperature > 25", ["sensor-temp-FAC02-SN2"]),
        ("properties.reported.temperature <= 21.5", ["sensor-temp-FAC01-SN1"]),
        ("properties.reported.temperature * 2 > 50", ["sensor-temp-FAC02-SN2"]),
        ("properties.reported.temperature - 0.5 = 21", ["sensor-temp-FAC01-SN1"]),
        ("properties.desired.interval = 0x1E", ["sensor-temp-FAC01-SN1"]),
        ("properties.desired.interval % 7 = 2", ["sensor-temp-FAC01-SN1"]),
        ("tags.floor = -(-3)", ["sensor-temp-FAC02-SN2"]),
        ("IS_DEFINED(properties.reported.certificate)", ["sensor-temp-FAC01-SN1", "sensor-temp-FAC02-SN2"]),
        ("NOT IS_DEFINED(properties.reported.certificate) AND status = 'enabled'", ["gw-FAC01-1"]),
        # null is a value: defined, and equal to null.
        ("is_defined(properties.reported.fw)", ["sensor-temp-FAC01-SN1"]),
        ("properties.reported.fw = null", ["sensor-temp-FAC01-SN1"]),
        ("tags.type IN ['vib', 'gw']", ["sensor-vib-FAC01-SN3", "gw-FAC01-1"]),
        ("tags.type NIN ['vib', 'gw']", ["sensor-temp-FAC01-SN1", "sensor-temp-FAC02-SN2"]),
        ("tags['facility'] = \"FAC02\"", ["sensor-temp-FAC02-SN2"]),
        # Property names resolve ignoring case when they do not match exactly.
        ("Tags.Facility = 'FAC02'", ["sensor-temp-FAC02-SN2"]),
    ],
)
def test_where_selects_the_expected_twins(condition, expected):
    assert ids(where(condition)) == expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        # The vibration sensor's floor is the string '2'; numbers never equal strings (undefined, not false).
        ("tags.floor = 2", []),
        ("tags.floor != 'x'", ["sensor-vib-FAC01-SN3"]),
        ("NOT (tags.floor = 'x')", ["sensor-vib-FAC01-SN3"]),
        # A missing property makes the comparison undefined, and NOT of undefined stays undefined.
        ("NOT (tags.missing = 1)", []),
        ("tags.missing != 1", []),
        ("tags.missing = 1 OR tags.type = 'gw'", ["gw-FAC01-1"]),
        ("properties.reported.certificate = 'x'", []),  # objects never compare
        ("tags.facility > 1", []),
    ],
)
def test_comparisons_across_types_or_with_missing_properties_are_undefined(condition, expected):
    assert ids(where(condition)) == expected


def test_select_star_returns_whole_twins_and_keywords_ignore_case():
    results = run(parse("select * from DEVICES where TAGS.type = 'gw'"), TWINS)
    assert results == [TWINS[3]]
    assert parse("SELECT * FROM devices").item_type == "twin"


def test_projection_names_items_after_the_last_path_segment_and_aliases():
    query = parse(
        "SELECT DeviceId, properties.reported.certificate.notAfter AS expiry, tags.floor FROM devices "
        "WHERE tags.facility = 'FAC01'"
    )
    assert query.item_type == "raw"
    assert run(query, TWINS) == [
        {"deviceId": "sensor-temp-FAC01-SN1", "expiry": "2027-01-15T00:00:00Z", "floor": 1},
        {"deviceId": "sensor-vib-FAC01-SN3", "floor": "2"},  # undefined values are left out
        {"deviceId": "gw-FAC01-1"},
    ]


def test_count_sum_avg_and_group_by():
    assert run(parse("SELECT COUNT() AS numberOfDevices FROM devices"), TWINS) == [{"numberOfDevices": 4}]
    assert run(parse("SELECT COUNT() FROM devices WHERE status = 'disabled'"), TWINS) == [{"$1": 1}]
    assert run(parse("SELECT COUNT() AS n FROM devices WHERE tags.type = 'none'"), TWINS) == [{"n": 0}]
    stats = run(
        parse(
            "SELECT SUM(properties.reported.temperature) AS s, AVG(properties.reported.temperature) AS a, "
            "MAX(properties.reported.temperature) AS m FROM devices"
        ),
        TWINS,
    )
    assert stats == [{"s": 51.5, "a": 25.75, "m": 30}]
    grouped = run(parse("SELECT tags.facility AS facility, COUNT() AS n FROM devices GROUP BY tags.facility"), TWINS)
    assert sorted(grouped, key=lambda r: r["facility"]) == [
        {"facility": "FAC01", "n": 3},
        {"facility": "FAC02", "n": 1},
    ]


def test_top_limits_results():
    assert ids("SELECT TOP 2 * FROM devices") == ["sensor-temp-FAC01-SN1", "sensor-temp-FAC02-SN2"]
    assert parse("SELECT TOP 2 * FROM devices").top == 2


def test_string_escapes():
    doc = [twin("d", tags={"name": 'O\'Brien "quoted" \\ é'})]
    query = parse("SELECT * FROM devices WHERE tags.name = 'O\\'Brien \\\"quoted\\\" \\\\ \\u00e9'")
    assert run(query, doc) == doc


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("SELECT FROM devices", "expected a property name"),
        ("SELECT * devices", "expected FROM"),
        ("SELECT * FROM twins", "expected FROM devices"),
        ("SELECT * FROM devices WHERE", "expected an expression"),
        ("SELECT * FROM devices WHERE tags.x = = 1", "expected an expression"),
        ("SELECT * FROM devices WHERE (tags.x = 1", "expected ')'"),
        ("SELECT * FROM devices WHERE tags.x = 'open", "unexpected character"),
        ("SELECT * FROM devices WHERE tags.x = 1 garbage", "unexpected input"),
        ("SELECT * FROM devices WHERE STARTSWITH(tags.x, 'a')", "unknown function"),
        ("SELECT * FROM devices WHERE tags.x IN [tags.y]", "constants"),
        ("SELECT * FROM devices WHERE tags.x = 'a\\q'", "invalid escape"),
        ("SELECT * FROM devices.modules", "not supported"),
        ("SELECT * FROM devices GROUP BY tags.x", "GROUP BY"),
        ("SELECT tags.x, COUNT() FROM devices", "GROUP BY"),
        ("SELECT TOP x * FROM devices", "TOP"),
        ("SELECT * FROM devices WHERE tags.x = #", "unexpected character"),
    ],
)
def test_syntax_errors_raise_query_error_with_a_reason(text, fragment):
    with pytest.raises(QueryError) as error:
        parse(text)
    assert fragment in str(error.value)


def test_syntax_error_names_the_column():
    with pytest.raises(QueryError) as error:
        parse("SELECT * FROM devices WHERE tags.x = = 1")
    assert str(error.value).startswith("Line 1:38 ")


def test_queries_longer_than_8192_characters_are_refused():
    long_query = where(" OR ".join(["tags.x = 'abcdefgh'"] * 500))
    with pytest.raises(QueryError, match="8192"):
        parse(long_query)
