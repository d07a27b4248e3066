"""Planning the twin write (pure): idempotency, the size guard, managed vs foreign keys, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import OnboardingError
from shared.identity import parse_device_id
from twin_setup.configuration import build_configuration, parse_override, parse_template
from twin_setup.document import canonical, size_of
from twin_setup.merge import merge_patch
from twin_setup.plan import TwinView, plan_configuration, plan_failure, replacement_patch
from twin_setup.settings import TwinLimits

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "templates"
LIMITS = TwinLimits()
NOW = "2026-03-01T10:00:00Z"
URL = "https://st.blob.core.windows.net/device-configurations/dev/h.json"
ESSENTIAL = ("telemetry", "firmware", "diagnostics")


def config_for(device_id: str, overrides: list | None = None, limits: TwinLimits = LIMITS):
    identity = parse_device_id(device_id)
    template = parse_template(identity.template, (TEMPLATES / f"{identity.template}-sensor.json").read_bytes(), limits)
    return build_configuration(identity, template, overrides or [], limits)


def fresh_twin(device_id: str = "sensor-temp-FAC03-SN1", is_edge: bool = False, **desired) -> TwinView:
    tags = {"facility": "FAC03", "onboarding": {"allocatedAt": "2026-03-01T09:59:58Z"}}
    return TwinView(device_id, "AAAAAAAAAAE=", tags, {"onboarding": {"state": "awaitingConfiguration"}, **desired},
                    is_edge)


def apply(twin: TwinView, patch: dict) -> TwinView:
    """What IoT Hub does with the PATCH (merge-patch on tags and desired)."""
    return TwinView(twin.device_id, "next", merge_patch(twin.tags, patch.get("tags", {})),
                    merge_patch(twin.desired, patch.get("properties", {}).get("desired", {})), twin.is_edge)


def test_twin_view_reads_the_registry_json():
    view = TwinView.from_json({"deviceId": "d", "etag": "AAE=", "tags": {"a": 1}, "capabilities": {"iotEdge": True},
                               "properties": {"desired": {"x": 1, "$version": 4, "$metadata": {}}}})
    assert (view.device_id, view.etag, view.tags, view.desired, view.is_edge) == ("d", "AAE=", {"a": 1}, {"x": 1}, True)
    assert TwinView.from_json({"deviceId": "d"}).is_edge is False


def test_first_configuration_writes_sections_and_onboarding_and_keeps_allocation_tags():
    config = config_for("sensor-temp-FAC03-SN1")
    plan = plan_configuration(fresh_twin(), config, LIMITS, ESSENTIAL, URL, NOW)
    assert (plan.action, plan.storage, plan.blob, plan.apply_edge) == ("write", "twin", None, False)
    after = apply(fresh_twin(), plan.patch)
    assert after.desired == {**config.desired, "onboarding": {"state": "configured", "configurationHash": config.hash,
                                                              "templateVersion": "1.0.0"}}
    onboarding = after.tags["onboarding"]
    assert onboarding["allocatedAt"] == "2026-03-01T09:59:58Z"  # the webhook's tags survive
    assert (onboarding["status"], onboarding["configurationHash"], onboarding["configuredAt"],
            onboarding["templateVersion"], onboarding["storage"]) == ("configured", config.hash, NOW, "1.0.0", "twin")
    assert "reason" not in onboarding
    assert plan.desired_bytes == size_of(after.desired)


def test_the_devicecreated_time_is_recorded_once_as_the_funnels_created_stage():
    created = "2026-03-01T10:00:01Z"
    before = config_for("sensor-press-FAC11-SN1")
    twin = apply(fresh_twin("sensor-press-FAC11-SN1"),
                 plan_configuration(fresh_twin("sensor-press-FAC11-SN1"), before, LIMITS, ESSENTIAL, URL, NOW,
                                    created).patch)
    assert twin.tags["onboarding"]["createdAt"] == created
    after = config_for("sensor-press-FAC11-SN1", [parse_override("FAC11", "pressure",
                                                                 json.dumps({"alerts": {"high": 1.0}}))])
    again = plan_configuration(twin, after, LIMITS, ESSENTIAL, URL, NOW, "2026-03-02T00:00:00Z")  # a redelivery
    assert "createdAt" not in again.patch["tags"]["onboarding"]
    assert "createdAt" not in plan_configuration(fresh_twin(), before, LIMITS, ESSENTIAL, URL, NOW).patch["tags"][
        "onboarding"]  # a rollout's write (no event): nothing claimed


def test_a_twin_that_carries_the_hash_is_not_written_again():
    config = config_for("sensor-temp-FAC03-SN1")
    configured = apply(fresh_twin(), plan_configuration(fresh_twin(), config, LIMITS, ESSENTIAL, URL, NOW).patch)
    assert plan_configuration(configured, config, LIMITS, ESSENTIAL, URL, NOW).action == "unchanged"


def test_a_new_configuration_deletes_what_the_old_one_had_and_leaves_foreign_keys():
    before = config_for("sensor-press-FAC11-SN1")
    twin = fresh_twin("sensor-press-FAC11-SN1", certificate={"pem": "-----BEGIN CERTIFICATE-----"})
    twin = apply(twin, plan_configuration(twin, before, LIMITS, ESSENTIAL, URL, NOW).patch)
    assert "spikeThreshold" in twin.desired["alerts"]
    after = config_for("sensor-press-FAC11-SN1", [parse_override("FAC11", "pressure",
                                                                 '{"alerts": {"spikeThreshold": null}}')])
    plan = plan_configuration(twin, after, LIMITS, ESSENTIAL, URL, NOW)
    assert plan.patch["properties"]["desired"]["alerts"]["spikeThreshold"] is None
    twin = apply(twin, plan.patch)
    assert "spikeThreshold" not in twin.desired["alerts"]
    assert twin.desired["certificate"] == {"pem": "-----BEGIN CERTIFICATE-----"}  # another writer's key


def test_oversized_configuration_goes_to_blob_with_a_pointer_and_the_essentials():
    big = {"alerts": {f"threshold{i:03d}": {"value": float(i), "note": "n" * 200} for i in range(120)}}
    config = config_for("sensor-temp-FAC03-SN1", [parse_override("FAC03", "*", json.dumps(big))])
    assert size_of(config.desired) > LIMITS.budget_bytes
    plan = plan_configuration(fresh_twin(), config, LIMITS, ESSENTIAL, URL, NOW)
    assert plan.storage == "blob" and plan.blob == canonical(config.document)
    after = apply(fresh_twin(), plan.patch)
    assert set(after.desired) == {"telemetry", "firmware", "diagnostics", "onboarding"}
    assert after.desired["onboarding"] == {"state": "configured", "configurationHash": config.hash,
                                           "templateVersion": "1.0.0", "configurationUrl": URL,
                                           "configurationBytes": len(plan.blob)}
    assert after.tags["onboarding"]["storage"] == "blob"
    assert plan.desired_bytes <= LIMITS.budget_bytes


def test_other_writers_keys_count_against_the_hub_limit():
    config = config_for("sensor-temp-FAC03-SN1")
    crowded = fresh_twin(other={"pad": "z" * 400, **{f"k{i}": "y" * 4000 for i in range(8)}})  # ~32.4 KB taken
    plan = plan_configuration(crowded, config, LIMITS, ESSENTIAL, URL, NOW)
    assert plan.storage == "blob"


def test_nothing_fits_is_configuration_too_large():
    config = config_for("sensor-temp-FAC03-SN1")
    crowded = fresh_twin(other={f"k{i}": "y" * 4000 for i in range(9)})
    with pytest.raises(OnboardingError) as err:
        plan_configuration(crowded, config, LIMITS, ESSENTIAL, URL, NOW)
    assert err.value.code == "configuration_too_large"


def test_a_tight_budget_drops_the_essentials_before_giving_up():
    tight = TwinLimits(budget_bytes=size_of({"onboarding": {"state": "configured", "configurationHash": "h" * 64,
                                                            "templateVersion": "1.0.0", "configurationUrl": URL,
                                                            "configurationBytes": 1}}) + 8)
    config = config_for("sensor-temp-FAC03-SN1", limits=tight)
    plan = plan_configuration(fresh_twin(), config, tight, ESSENTIAL, URL, NOW)
    assert set(plan.patch["properties"]["desired"]) == {"onboarding"}


def test_gateway_needs_an_edge_device_and_plans_the_deployment():
    config = config_for("sensor-gw-FAC01-GW1")
    with pytest.raises(OnboardingError) as err:
        plan_configuration(fresh_twin("sensor-gw-FAC01-GW1"), config, LIMITS, ESSENTIAL, URL, NOW)
    assert err.value.code == "edge_capability_mismatch"
    plan = plan_configuration(fresh_twin("sensor-gw-FAC01-GW1", is_edge=True), config, LIMITS, ESSENTIAL, URL, NOW)
    assert plan.apply_edge
    assert "edge" not in plan.patch["properties"]["desired"]
    assert plan.patch["tags"]["onboarding"]["edgeDeploymentHash"] == config.edge_hash
    assert plan.patch["tags"]["onboarding"]["edgeDeployedAt"] == NOW


def test_failure_is_recorded_once_and_never_over_a_working_configuration():
    twin = fresh_twin()
    patch = plan_failure(twin, "unknown_template", "no blob x", NOW)
    failed = apply(twin, patch)
    assert failed.tags["onboarding"] == {"allocatedAt": "2026-03-01T09:59:58Z", "status": "failed",
                                         "reason": "unknown_template", "failedAt": NOW, "detail": "no blob x"}
    assert failed.desired["onboarding"] == {"state": "failed", "reason": "unknown_template"}
    assert plan_failure(failed, "unknown_template", None, NOW) is None  # a redelivery adds nothing
    assert plan_failure(failed, "invalid_template", None, NOW) is not None  # a different failure is news
    config = config_for("sensor-temp-FAC03-SN1")
    configured = apply(failed, plan_configuration(failed, config, LIMITS, ESSENTIAL, URL, NOW).patch)
    assert "reason" not in configured.tags["onboarding"] and "reason" not in configured.desired["onboarding"]
    assert plan_failure(configured, "unknown_template", None, NOW) is None


def test_replacement_patch_turns_current_into_new():
    current = {"a": {"b": 1, "c": 2}, "d": 3, "e": {"f": 1}}
    new = {"a": {"b": 5}, "e": 7, "g": {"h": 1}}
    assert merge_patch(current, replacement_patch(current, new)) == new
