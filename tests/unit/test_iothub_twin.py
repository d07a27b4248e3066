"""Twin rules of the IoT Hub emulator: merge-patch, versions, $metadata, size and format limits."""

from __future__ import annotations

import pytest

from local.iothub.config import TwinLimits
from local.iothub.errors import HubError
from local.iothub.twin import (
    apply_reported,
    apply_service_update,
    device_twin_view,
    merge,
    new_state,
    size_of,
    twin_etag,
    validate_section,
)

LIMITS = TwinLimits(desired_bytes=8 * 1024)
T0, T1 = "2026-01-01T00:00:00.0000000Z", "2026-01-02T00:00:00.0000000Z"


def test_merge_patch_deletes_with_null_merges_objects_and_replaces_the_rest():
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "f": {"g": 1}}
    patch = {"a": None, "b": {"c": None, "x": {"y": None, "z": 1}}, "e": [3], "f": "flat", "missing": None}
    assert merge(target, patch) == {"b": {"d": 3, "x": {"z": 1}}, "e": [3], "f": "flat"}
    assert target["b"] == {"c": 2, "d": 3}  # the input is not modified


def test_desired_update_bumps_desired_version_version_and_etag_and_records_metadata():
    state = new_state(T0)
    updated = apply_service_update(state, None, {"telemetry": {"interval": 30}}, LIMITS, T1, replace=False)
    assert updated["desiredVersion"] == state["desiredVersion"] + 1
    assert updated["version"] == state["version"] + 1
    assert twin_etag(updated["etagSeq"]) != twin_etag(state["etagSeq"])
    meta = updated["desiredMeta"]
    assert meta["$lastUpdated"] == T1 and meta["$lastUpdatedVersion"] == updated["desiredVersion"]
    assert meta["telemetry"]["interval"] == {"$lastUpdated": T1, "$lastUpdatedVersion": 2}
    assert state["desired"] == {}  # the input state is not modified


def test_tags_only_update_leaves_the_desired_version_alone():
    state = apply_service_update(new_state(T0), {"facility": "FAC01"}, None, LIMITS, T1, replace=False)
    assert state["tags"] == {"facility": "FAC01"}
    assert state["desiredVersion"] == 1


def test_replace_drops_tags_and_desired_that_are_not_resent():
    state = apply_service_update(new_state(T0), {"a": 1}, {"x": 1, "y": 2}, LIMITS, T0, replace=False)
    replaced = apply_service_update(state, None, {"y": 3}, LIMITS, T1, replace=True)
    assert replaced["tags"] == {} and replaced["desired"] == {"y": 3}
    assert "x" not in replaced["desiredMeta"]


def test_reported_update_bumps_reported_version_and_keeps_desired():
    state = apply_service_update(new_state(T0), None, {"interval": 10}, LIMITS, T0, replace=False)
    reported = apply_reported(state, {"interval": 10, "certificate": {"csr": "MIIB"}}, LIMITS, T1)
    assert reported["reportedVersion"] == 2 and reported["desiredVersion"] == state["desiredVersion"]
    assert reported["reportedMeta"]["certificate"]["csr"] == {"$lastUpdated": T1}


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ({"ab": "cd"}, 4),
        ({"n": 12345}, 9),  # numbers count 8 bytes
        ({"b": True}, 5),  # booleans 4
        ({"o": {"k": "v"}}, 3),
        ({"é": "é"}, 4),  # UTF-8 bytes
        ({"t": "a\u0001b"}, 3),  # control characters do not count
    ],
)
def test_twin_size_follows_the_documented_formula(value, size):
    assert size_of(value) == size


def test_growing_desired_past_the_limit_is_refused_with_403():
    state = new_state(T0)
    big = {f"k{i}": "x" * 1000 for i in range(9)}
    with pytest.raises(HubError) as refused:
        apply_service_update(state, None, big, LIMITS, T1, replace=False)
    assert (refused.value.status, refused.value.code) == (403, "DeviceModelMaxPropertiesExceeded")
    assert "8192" in refused.value.message


def test_a_twin_already_over_a_lowered_limit_may_still_shrink():
    state = apply_service_update(
        new_state(T0), None, {f"k{i}": "x" * 1000 for i in range(12)}, TwinLimits(), T0, replace=False
    )  # ~12 KB, then the limit drops to 8 KB
    smaller = apply_service_update(state, None, {"k0": None}, LIMITS, T1, replace=False)
    assert "k0" not in smaller["desired"] and size_of(smaller["desired"]) > LIMITS.desired_bytes
    with pytest.raises(HubError):
        apply_service_update(smaller, None, {"k0": "x"}, LIMITS, T1, replace=False)


def test_tags_have_their_own_8kb_limit():
    with pytest.raises(HubError) as refused:
        apply_service_update(new_state(T0), {f"t{i}": "x" * 1000 for i in range(9)}, None, TwinLimits(), T1, False)
    assert "'Tags'" in refused.value.message


def _nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for level in range(levels, 0, -1):
        value = {f"l{level}": value}
    return value


@pytest.mark.parametrize(
    "section",
    [
        {"a.b": 1},
        {"a b": 1},
        {"$a": 1},
        {"a\u0007": 1},
        {"": 1},
        {"k" * 1025: 1},
        {"s": "x" * 4097},
        {"s": "é" * 2049},
        {"i": 2**60},
        {"f": float("nan")},
        {"ok": {"bad.key": 1}},
        {"list": [{"bad.key": 1}]},
        _nested(11),
    ],
)
def test_invalid_sections_are_400_argument_invalid(section):
    with pytest.raises(HubError) as refused:
        validate_section(section, "properties.desired", TwinLimits())
    assert (refused.value.status, refused.value.code) == (400, "ArgumentInvalid")


@pytest.mark.parametrize(
    "section",
    [
        {"s": "x" * 4096},
        {"i": 4503599627370495},
        {"n": None},
        {"list": [1, "a", {"k": True}]},
        _nested(10),
        {},
    ],
)
def test_valid_sections_pass(section):
    assert validate_section(section, "properties.desired", TwinLimits()) == section


def test_twin_view_puts_metadata_and_versions_inside_the_sections_and_omits_empty_tags():
    device = {
        "deviceId": "d1",
        "etag": "MTIz",
        "status": "enabled",
        "statusUpdatedTime": "0001-01-01T00:00:00Z",
        "connectionState": "Disconnected",
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "capabilities": {"iotEdge": False},
        "authentication": {
            "type": "certificateAuthority",
            "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
        },
    }
    view = device_twin_view(device, new_state(T0))
    assert "tags" not in view
    assert view["properties"]["desired"] == {"$metadata": {"$lastUpdated": T0}, "$version": 1}
    assert view["authenticationType"] == "certificateAuthority" and view["deviceEtag"] == "MTIz"
    assert view["etag"] == "AAAAAAAAAAE="
