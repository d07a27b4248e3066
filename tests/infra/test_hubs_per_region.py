"""Issue 20 item 1: adding a hub to a region is a deployment parameter plus a row, never a code change.

main.bicep's hubsPerRegion, evaluated through the templates (tests/infra/bicep_eval.py: the loops expanded for the
parameter values, as a deployment would) : N hubs per region, the first of each region under the name it had before
the parameter existed, and every hub covered by what follows the hub list (DPS links, role assignments, Event Grid
subscriptions and their dead-letter role, alerts, private endpoints, app settings, outputs)."""

from __future__ import annotations

import json

import pytest

from tests.infra.bicep import INFRA, load
from tests.infra.bicep_eval import Template
from tests.infra.scenarios import REGIONS

BASE = {"environmentName": "demo", "location": "westeurope"}


def deploy(**params) -> Template:
    return Template("main.bicep", {**BASE, **params})


@pytest.fixture(scope="module")
def one() -> Template:
    return deploy()


@pytest.fixture(scope="module")
def two() -> Template:
    return deploy(hubsPerRegion=2, subscribeDeviceCreated=True, vnetEnabled=True)


def token(main: Template) -> str:
    return main.symbol("resourceToken", {})


def hub_names(main: Template) -> list[str]:
    return [hub.name for hub in main.child("hubs").instances("hub")]


def test_the_parameter_is_declared_bound_and_passed_on():
    main = load("main.bicep")
    param = main.parameters["hubsPerRegion"]
    decorators = {d["type"]: d.get("argument") for d in param["decorators"]}
    assert param["default"] == 1 and {"description", "min_value", "max_value"} <= set(decorators)
    assert decorators["min_value"] == 1 and decorators["max_value"] == 16
    module = load("modules/iothubs.bicep").parameters["hubsPerRegion"]
    assert module["default"] == 1
    bound = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]["hubsPerRegion"]
    assert bound == {"value": "${HUBS_PER_REGION=1}"}


def test_one_hub_per_region_by_default_with_the_names_of_before(one):
    # The names the template gave before the parameter existed: {prefix}{region}-{token}, one per region, in order.
    assert hub_names(one) == [f"iot-{region}-{token(one)}" for region in REGIONS]
    topics = [topic.name for topic in one.child("hubs").instances("systemTopic")]
    assert topics == [f"egst-{region}-{token(one)}" for region in REGIONS]


def test_two_per_region_declare_six_hubs_the_first_three_unchanged(one, two):
    names = hub_names(two)
    assert len(names) == 6 == len(set(names))
    assert names[:3] == hub_names(one)
    assert names[3:] == [f"iot-{region}2-{token(two)}" for region in REGIONS]
    hubs = two.child("hubs").instances("hub")
    assert [hub.get("tags")["onboarding-region"] for hub in hubs] == [*REGIONS, *REGIONS]
    topics = [topic.name for topic in two.child("hubs").instances("systemTopic")]
    assert topics[:3] == [topic.name for topic in one.child("hubs").instances("systemTopic")]
    assert len(set(topics)) == 6
    assert [topic.get("properties", "source") for topic in two.child("hubs").instances("systemTopic")] == [
        f"/Microsoft.Devices/IotHubs/{name}" for name in names]


def test_three_per_region_number_the_extra_hubs(one):
    names = hub_names(deploy(hubsPerRegion=3))
    assert names[:3] == hub_names(one) and len(set(names)) == 9
    assert names[6:] == [f"iot-{region}3-{token(one)}" for region in REGIONS]


def test_dps_links_every_hub(two):
    (dps,) = two.child("dps").instances("dps")
    links = dps.get("properties", "iotHubs")
    assert [link["connectionString"].split(";")[0] for link in links] == [
        f"HostName={name}.azure-devices.net" for name in hub_names(two)]


@pytest.mark.parametrize("edge", [True, False])
def test_the_app_holds_its_hub_roles_on_every_hub_under_unique_names(edge):
    main = deploy(hubsPerRegion=2, enableEdgeDeployments=edge)
    rbac = main.child("rbac")
    symbols = ["functionHubData"] if edge else ["functionHubReader", "functionHubTwins", "functionHubRegistry"]
    every = []
    for symbol in symbols:
        assignments = rbac.instances(symbol)
        assert sorted(a.get("scope")["name"] for a in assignments) == sorted(hub_names(main)), symbol
        every += [a.name for a in assignments]
    assert len(every) == len(set(every)) == 6 * len(symbols)
    dead_letter = [a.name for a in rbac.instances("topicDeadLetter")]
    assert len(dead_letter) == len(set(dead_letter)) == 6


def test_every_hub_has_its_device_created_subscription_and_alerts(two):
    subscriptions = two.child("deviceEvents").instances("deviceCreated")
    assert sorted(s.get("parent")["name"] for s in subscriptions) == sorted(
        t.name for t in two.child("hubs").instances("systemTopic"))
    alerts = two.child("alerts")
    throttle = [a.name for a in alerts.instances("throttleAlerts")]
    dead = [a.name for a in alerts.instances("deadLetterAlerts")]
    # one dead-letter alert per hub's system topic, and one for the storage account's (template uploads)
    assert len(set(throttle)) == 6 and len(set(dead)) == 7
    assert all(any(name in alert for alert in throttle) for name in hub_names(two))


def test_private_endpoints_of_the_first_hubs_keep_their_names_and_hubs(two):
    one_private = deploy(vnetEnabled=True)

    def hub_endpoints(main: Template) -> dict[str, str]:
        return {e.name: e.get("properties", "privateLinkServiceConnections")[0]["properties"]["privateLinkServiceId"]
                for e in main.child("privateEndpoints").instances("endpoint") if "-iot-" in e.name}

    before, after = hub_endpoints(one_private), hub_endpoints(two)
    assert len(after) == 6 and {name: after[name] for name in before} == before
    assert sorted(after.values()) == sorted(f"/Microsoft.Devices/IotHubs/{name}" for name in hub_names(two))


def test_app_settings_and_outputs_name_every_hub_and_its_region(two):
    hosts = [f"{name}.azure-devices.net" for name in hub_names(two)]
    settings = two.child("functionApp").symbol("productSettings", {})
    assert settings["IOT_HUB_HOSTNAMES"] == ",".join(hosts)
    assert settings["IOT_HUB_NAMES"] == ",".join(f"{n}={h}" for n, h in zip(hub_names(two), hosts, strict=True))
    assert settings["REGIONAL_CAS"] == ",".join(f"{r}=intermediate-ca-{r}" for r in REGIONS)
    assert two.output("IOT_HUB_HOSTNAMES") == ",".join(hosts)
    assert two.output("IOT_HUB_REGIONS") == ",".join(
        f"{host}={region}" for host, region in zip(hosts, [*REGIONS, *REGIONS], strict=True))
    assert two.output("REGIONS") == ",".join(REGIONS)
