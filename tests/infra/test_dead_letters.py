"""Issue 16: dead-lettered Event Grid events are seen. Every system topic that dead-letters (each hub's, for
DeviceCreated; the storage account's, for template BlobCreated, once that subscription is deployed) has a metric alert
on DeadLetteredCount and a chart in the workbook, split by DeadLetterReason. Metric and dimension names: Azure Monitor
"Supported metrics - Microsoft.EventGrid/systemTopics" (docs/contracts.md "Event Grid delivery")."""

from __future__ import annotations

import pytest

from tests.infra.bicep_eval import Template

BASE = {"environmentName": "demo", "location": "westeurope"}


@pytest.fixture(scope="module")
def subscribed() -> Template:
    return Template("main.bicep", {**BASE, "subscribeDeviceCreated": True})


@pytest.fixture(scope="module")
def first_deploy() -> Template:
    return Template("main.bicep", BASE)  # the function code is not published yet: no subscriptions


def topics(main: Template) -> list[str]:
    found = [t.name for t in main.child("hubs").instances("systemTopic")]
    if main.symbol("subscribeDeviceCreated", {}):
        found.append(main.child("templateEvents").instances("topic")[0].name)
    return found


def test_every_dead_lettering_topic_has_an_alert_on_dead_lettered_count(subscribed, first_deploy):
    for main in (subscribed, first_deploy):
        alerts = main.child("alerts")
        prefix = main.child("alerts").symbol("alertRulePrefix", {})
        assert sorted(a.name for a in alerts.instances("deadLetterAlerts")) == \
            sorted(f"{prefix}-dead-letters-{topic}" for topic in topics(main))
        assert alerts.symbol("systemTopicNames", {}) == topics(main)  # each alert's scope: topicRef[i]
    assert len(topics(subscribed)) == len(topics(first_deploy)) + 1  # the storage account's topic


def test_the_workbook_charts_dead_lettered_events_of_every_topic(subscribed):
    workbook = subscribed.child("workbook")
    item = workbook.symbol("deadLetterItem", {})["content"]
    assert [r.rsplit("/", 1)[-1] for r in item["resourceIds"]] == topics(subscribed)
    assert all("Microsoft.EventGrid/systemTopics" in r for r in item["resourceIds"])
    (metric,) = item["metrics"]
    assert metric["metric"] == "microsoft.eventgrid/systemtopics--DeadLetteredCount"
    assert metric["splitBy"] == "DeadLetterReason" and metric["aggregation"] == 1  # 1: Sum (the metric's Total)
    names = [i["name"] for i in workbook.symbol("workbookContent", {})["items"]]
    assert "dead-lettered-events" in names and "run-budgets" in names


def test_without_topics_the_workbook_has_no_empty_chart():
    workbook = Template("modules/workbook.bicep", {
        "location": "westeurope", "tags": {}, "applicationInsightsName": "appi", "storageAccountName": "st",
        "environmentName": "demo", "logAnalyticsWorkspaceId": "/workspaces/log"})
    names = [i["name"] for i in workbook.symbol("workbookContent", {})["items"]]
    assert "dead-lettered-events" not in names
