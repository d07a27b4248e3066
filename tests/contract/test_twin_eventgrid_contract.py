"""Documented Event Grid payloads through the dev host's Event Grid endpoint into on_device_created.

The real function_app (as the worker indexes it) behind the local dev host's
`/runtime/webhooks/EventGrid?functionName=on_device_created`, with twin setup wired to in-memory fakes of IoT
Hub, Blob and SQL (tests/unit/test_twin_service.py), so the contract is checked without any emulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

import function_app
from local.host import create_host_app
from local.serve import free_port, serve_in_thread
from shared.retry import TransientError
from tests.unit.test_twin_service import HUB_NAME, build_service
from twin_setup import wiring as twin_wiring

FIXTURES = Path(__file__).parent / "eventgrid"
URL = "/runtime/webhooks/EventGrid"
PARAMS = {"functionName": "on_device_created"}
DEVICE = "sensor-temp-FAC03-SN482019"


def fixture(name: str, device_id: str = DEVICE, hub: str = HUB_NAME) -> list | dict:
    text = (FIXTURES / name).read_text()
    for key, value in {"SUBSCRIPTION": "5e1b2c3d-0000-4000-8000-00000000beef", "RESOURCE_GROUP": "rg-onboarding",
                       "HUB_NAME": hub, "DEVICE_ID": device_id}.items():
        text = text.replace("{{" + key + "}}", value)
    return json.loads(text)


@pytest.fixture
def wired(monkeypatch):
    harness = build_service()
    monkeypatch.setattr(twin_wiring, "twin_setup", lambda: harness.service)
    return harness


@pytest.fixture(scope="module")
def host_app():
    return create_host_app(function_app.app, {"version": "2.0"}, None)


@pytest.fixture(scope="module")
def client(host_app):
    server = serve_in_thread(host_app, free_port())
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as http:
            yield http
    finally:
        server.stop()


def post(client, body, kind: str = "Notification", content_type: str = "application/json"):
    return client.post(URL, params=PARAMS, content=json.dumps(body),
                       headers={"aeg-event-type": kind, "content-type": content_type})


def test_the_function_is_indexed_as_an_event_grid_trigger_named_on_device_created(host_app):
    spec = {s.name: s for s in host_app.state.host.functions}["on_device_created"]
    assert spec.trigger_type == "eventGridTrigger"


def test_subscription_validation_is_answered_without_invoking_the_function(client, wired):
    body = fixture("subscription-validation.eventgrid.json")
    response = post(client, body, kind="SubscriptionValidation")
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert wired.hub.writes == {}


def test_cloudevents_abuse_protection_handshake(client):
    response = client.options(URL, params=PARAMS, headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert (response.status_code, response.headers["webhook-allowed-origin"]) == (200, "eventgrid.azure.net")


def test_documented_event_grid_device_created_configures_the_twin(client, wired):
    wired.hub.create(DEVICE)
    assert post(client, fixture("device-created.eventgrid.json")).status_code == 202
    onboarding = wired.hub.onboarding(DEVICE)
    assert onboarding["status"] == "configured" and onboarding["template"] == "temperature"
    assert wired.hub.desired(DEVICE)["alerts"]["high"] == 70.0  # FAC03's override


def test_documented_cloudevents_device_created_single_and_batch(client, wired):
    devices = ["sensor-press-FAC11-C1", "sensor-vib-FAC07-C2"]
    for device in devices:
        wired.hub.create(device)
    single = fixture("device-created.cloudevents.json", devices[0])[0]
    assert post(client, single, content_type="application/cloudevents+json").status_code == 202
    batch = fixture("device-created.cloudevents.json", devices[1])
    assert post(client, batch, content_type="application/cloudevents-batch+json").status_code == 202
    assert wired.hub.writes == dict.fromkeys(devices, 1)


def test_the_documented_example_device_is_not_a_sensor_and_is_left_alone(client, wired):
    wired.hub.create("LogicAppTestDevice")
    assert post(client, fixture("device-created.eventgrid.json", "LogicAppTestDevice")).status_code == 202
    assert wired.hub.writes == {}


@pytest.mark.parametrize("name", ["device-deleted.eventgrid.json", "device-connected.eventgrid.json"])
def test_other_lifecycle_events_are_acknowledged_and_ignored(client, wired, name):
    wired.hub.create(DEVICE)
    assert post(client, fixture(name)).status_code == 202
    assert wired.hub.writes == {}


def test_the_same_event_three_times_in_one_batch_is_one_write(client, wired):
    wired.hub.create(DEVICE)
    event = fixture("device-created.eventgrid.json")[0]
    assert post(client, [event, event, event]).status_code == 202
    assert wired.hub.writes == {DEVICE: 1}


def test_a_transient_failure_fails_the_delivery_so_event_grid_retries(client, wired):
    wired.hub.create(DEVICE)
    wired.hub.errors["get"] = [TransientError("HTTP 503", 30.0)]
    response = post(client, fixture("device-created.eventgrid.json"))
    assert response.status_code == 500
    assert post(client, fixture("device-created.eventgrid.json")).status_code == 202  # the redelivery
    assert wired.hub.writes == {DEVICE: 1}


def test_an_event_from_an_unconfigured_hub_fails_the_delivery(client, wired):
    wired.hub.create(DEVICE)
    assert post(client, fixture("device-created.eventgrid.json", hub="someone-elses-hub")).status_code == 500
    assert wired.hub.writes == {}


def test_a_device_created_event_without_a_device_is_acknowledged_not_retried(client, wired):
    event = fixture("device-created.eventgrid.json")[0]
    event["subject"] = ""
    del event["data"]["deviceId"]
    assert post(client, [event]).status_code == 202
    assert wired.hub.writes == {}


def test_a_body_that_is_not_event_grid_json_is_400(client, wired):
    response = client.post(URL, params=PARAMS, content=b"{nope", headers={"aeg-event-type": "Notification"})
    assert response.status_code == 400
