"""The dashboard and alert queries read what the code emits: same event names, same fields, same message shape."""

from __future__ import annotations

import json
import logging
import re

import pytest

from shared import telemetry
from tests.infra.bicep import INFRA, function_calls, load
from tests.infra.code_scan import telemetry_events

QUERIES = INFRA / "monitoring" / "queries"
EVENTS_KQL = (QUERIES / "events.kql").read_text()
VIEW = re.compile(r'let (\w+) = OnboardingEvents\s*\|\s*where EventName == "(\w+)"\s*\|\s*project timestamp,(.*?);',
                  re.S)
FIELD = re.compile(r"(\w+) = to\w+\(Fields\.(\w+)\)")


def views() -> dict[str, tuple[str, dict[str, str]]]:
    """view name -> (event name, {column: event field})."""
    return {name: (event, dict(FIELD.findall(columns))) for name, event, columns in VIEW.findall(EVENTS_KQL)}


def loaded_queries(module: str) -> list[str]:
    return [call["file_path"] for call in function_calls(load(module).tree, "load_text_content")]


def query_parameters(module: str) -> set[str]:
    return set(re.findall(r"let (\w+) =", load(module).variables["queryParameters"]["value"]))


def test_the_views_parse():
    assert "AllocationEvents" in views() and len(views()) == EVENTS_KQL.count("= OnboardingEvents")


@pytest.mark.parametrize("view", sorted(views()))
def test_each_view_reads_an_event_the_code_emits_with_its_fields(view):
    event, columns = views()[view]
    emits = telemetry_events().get(event)
    assert emits, f"{view} reads event {event!r}, which no telemetry.emit(...) call in the code emits"
    if any(e.open_ended for e in emits):
        return  # **fields: the static check cannot see every field
    known = set().union(*(e.fields for e in emits))
    unknown = set(columns.values()) - known
    assert not unknown, f"{view}: fields {sorted(unknown)} are not emitted with {event!r} ({emits[0].place})"


def test_every_event_the_code_emits_has_a_view():
    viewed = {event for event, _ in views().values()}
    missing = {event: emits[0].place for event, emits in telemetry_events().items() if event not in viewed}
    assert not missing, f"events emitted by the code without a view in infra/monitoring/queries/events.kql: {missing}"


def test_allocation_view_matches_the_webhook_fields_exactly():
    _event, columns = views()["AllocationEvents"]
    assert set(columns.values()) == {"outcome", "reasonCode", "registrationId", "facility", "hub", "rule",
                                     "crossRegion", "certificateValidationMs", "durationMs"}


def test_the_message_shape_the_views_parse(caplog):
    caplog.set_level(logging.INFO, logger="onboarding.events")
    telemetry.emit("allocation", 12.5, outcome="allocated", registrationId="sensor-temp-FAC01-SN1", crossRegion=False)
    message = caplog.records[-1].getMessage()
    event, _, payload = message.partition(" {")
    fields = json.loads("{" + payload)
    assert event == "allocation" and fields["event"] == event
    assert fields["durationMs"] == 12.5 and fields["crossRegion"] is False


@pytest.mark.parametrize("path", sorted(p.name for p in QUERIES.glob("*.kql") if p.name != "events.kql"))
def test_queries_read_events_only_through_the_views(path):
    text = (QUERIES / path).read_text()
    assert "Fields." not in text and "EventName ==" not in text and "traces" not in text
    used = set(re.findall(r"\b(\w+Events)\b", text)) - {"OnboardingEvents"}
    assert used or "OnboardingEvents" in text, f"{path} reads no event view"
    assert used <= set(views()), f"{path} uses undefined views {sorted(used - set(views()))}"


@pytest.mark.parametrize("module", ["modules/workbook.bicep", "modules/alerts.bicep"])
def test_every_query_parameter_is_defined_by_its_module(module):
    all_parameters = query_parameters("modules/workbook.bicep") | query_parameters("modules/alerts.bicep")
    defined = query_parameters(module)
    for file_path in loaded_queries(module):
        text = (INFRA / "modules" / file_path).read_text()
        needed = {name for name in all_parameters if re.search(rf"\b{name}\b", text)}
        assert needed <= defined, f"{file_path} needs {sorted(needed - defined)} from {module}"


def test_every_query_file_is_used():
    used = {p.removeprefix("../monitoring/queries/") for m in ("modules/workbook.bicep", "modules/alerts.bicep")
            for p in loaded_queries(m)}
    assert used == {str(p.relative_to(QUERIES)) for p in QUERIES.rglob("*.kql")}


def test_the_ca_key_operations_tile_reads_the_key_vault_audit_log():
    # Resource logs, not app telemetry: the tile queries the Log Analytics workspace that Key Vault's diagnostic
    # setting (category AuditEvent, destination Dedicated -> AZKVAuditLogs) writes to; AzureDiagnostics as well.
    item = load("modules/workbook.bicep").variables["caKeyOperationsItem"]["value"]["content"]
    assert item["resourceType"] == "microsoft.operationalinsights/workspaces"
    assert item["crossComponentResources"] == ["logAnalyticsWorkspaceId"]
    text = (QUERIES / "resource-logs" / "ca-key-operations.kql").read_text()
    assert "union isfuzzy=true" in text and "AZKVAuditLogs" in text and '"AuditEvent"' in text
    assert "CA in (ExpectedCAs)" in text and "FunctionPrincipalId" in text
    assert {"TimeGenerated", "CA", "OperationName", "Caller", "Result"} <= set(
        re.search(r"\| project (TimeGenerated, CA.*?)\n\|", text, re.S).group(1).replace(",", " ").split())
    vault = load("modules/keyvault.bicep").resources["diagnostics"]["config"]["properties"]
    assert vault["logAnalyticsDestinationType"] == "Dedicated"
    assert [log["category"] for log in vault["logs"]] == ["AuditEvent"]


def test_the_platform_metric_alerts():
    # Metric names: "Supported metrics" for Microsoft.EventGrid/systemTopics, Microsoft.Devices/IotHubs and
    # Microsoft.Devices/provisioningServices (Azure Monitor reference).
    alerts = load("modules/alerts.bicep")
    metrics = {}
    for name in ("deadLetterAlerts", "throttleAlerts", "dpsFailureAlert"):
        config = alerts.resources[name]["config"]
        config = config.get("config", config)
        properties = config["properties"]["function"]["parameters"]
        criteria = next(v for v in properties.values() if isinstance(v, dict) and "criteria" in v)["criteria"]
        (criterion,) = criteria["allOf"]
        metrics[name] = (criterion["metricNamespace"], criterion["metricName"])
        assert alerts.resources[name]["type"] == "Microsoft.Insights/metricAlerts"
    assert metrics == {
        "deadLetterAlerts": ("Microsoft.EventGrid/systemTopics", "DeadLetteredCount"),
        "throttleAlerts": ("Microsoft.Devices/IotHubs", "d2c.telemetry.ingress.sendThrottle"),
        "dpsFailureAlert": ("Microsoft.Devices/provisioningServices", "RegistrationAttempts"),
    }


def test_the_alert_rules_the_issue_asks_for():
    rules = load("modules/alerts.bicep").variables["rules"]["value"]
    names = {rule["name"] for rule in rules}
    assert names == {"provisioning-success-rate", "provisioning-failure-burst", "certificate-expiry",
                     "twin-update-failures", "crl-age", "stuck-sensors"}
    failure_burst = next(r for r in rules if r["name"] == "provisioning-failure-burst")
    assert failure_burst["windowSize"] == "PT15M"
    assert load("modules/alerts.bicep").parameters["successTarget"]["default"] == "0.95"
    assert load("modules/alerts.bicep").parameters["failureBurst"]["default"] == 5


def test_the_dashboard_panels_the_issue_asks_for():
    panels = {panel["name"] for panel in load("modules/workbook.bicep").variables["panels"]["value"]}
    assert {"provisioning-daily", "failures-by-reason", "allocation-latency", "not-configured",
            "certificates-by-expiry", "crl-age"} <= panels
    queue_depth = load("modules/workbook.bicep").variables["queueDepthItem"]["value"]
    assert "QueueMessageCount" in queue_depth["content"]["metrics"][0]["metric"]
