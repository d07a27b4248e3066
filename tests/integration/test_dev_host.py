"""The local Functions dev host against Azurite: HTTP, Event Grid, admin, timer and queue triggers."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import azure.functions as func
import httpx
import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from local.host import HostKeys, banner, create_host_app
from local.serve import free_port, serve_in_thread
from tests.integration import sample_function_app as sample

pytestmark = pytest.mark.integration

HOST_JSON = {
    "version": "2.0",
    "extensions": {
        "http": {"routePrefix": "api"},
        "queues": {"maxDequeueCount": 2, "visibilityTimeout": "00:00:01", "maxPollingInterval": "00:00:00.200",
                   "batchSize": 4},
    },
}
HUB = "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/hub-eu"


@dataclass
class Host:
    url: str
    keys: HostKeys
    client: httpx.Client
    connection_string: str


@pytest.fixture(scope="module")
def host(azurite, tmp_path_factory) -> Iterator[Host]:
    keys = HostKeys.from_state_dir(tmp_path_factory.mktemp("host-state"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AzureWebJobsStorage", azurite)
        server = serve_in_thread(create_host_app(sample.app, HOST_JSON, keys), free_port())
        url = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=url, timeout=10) as client:
            try:
                yield Host(url, keys, client, azurite)
            finally:
                server.stop()


def wait_for(condition: Callable[[], object], timeout: float = 10, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- HTTP triggers ---------------------------------------------------------------------------------------

def test_anonymous_route_with_parameter(host):
    response = host.client.get("/api/hello/World")
    assert response.status_code == 200
    assert response.text == "Hello, World"
    assert response.headers["x-greeting"] == "yes"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_method_not_listed_is_404_like_the_functions_host(host):
    assert host.client.post("/api/hello/World").status_code == 404
    assert host.client.get("/api/nowhere").status_code == 404


def test_function_level_needs_a_key(host):
    assert host.client.get("/api/items/7").status_code == 401
    assert host.client.get("/api/items/7", params={"code": "wrong"}).status_code == 401
    assert host.client.get("/api/items/7", params={"code": host.keys.function_key}).status_code == 201
    assert host.client.get("/api/items/7", headers={"x-functions-key": host.keys.function_key}).status_code == 201
    assert host.client.get("/api/items/7", headers={"x-functions-key": host.keys.master_key}).status_code == 201


def test_request_reaches_the_function_whole(host):
    response = host.client.post("/api/items/42/full", params={"q": "x", "code": host.keys.function_key},
                                headers={"x-test": "hi"}, content=b"payload")
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["route_params"] == {"id": "42", "detail": "full"}
    assert seen["params"]["q"] == "x"
    assert seen["header"] == "hi"
    assert seen["body"] == "payload"
    assert seen["url"].startswith(f"{host.url}/api/items/42/full?")
    assert seen["function_name"] == "items"
    uuid.UUID(seen["invocation_id"])


def test_optional_parameter_and_constraint(host):
    key = {"code": host.keys.function_key}
    assert host.client.get("/api/items/42", params=key).json()["route_params"] == {"id": "42"}
    assert host.client.get("/api/items/abc", params=key).status_code == 404  # {id:int} refuses it


def test_admin_level_takes_only_the_master_key(host):
    assert host.client.post("/api/secure/revoke", params={"code": host.keys.function_key}).status_code == 401
    response = host.client.post("/api/secure/revoke", headers={"x-functions-key": host.keys.master_key})
    assert response.status_code == 200
    assert response.text == "revoked"


def test_async_function_returning_str(host):
    response = host.client.get("/api/async/fn")
    assert (response.status_code, response.text) == (200, "async fn")


def test_failures_are_500(host):
    assert host.client.get("/api/boom").status_code == 500
    assert host.client.get("/api/nothing").status_code == 500  # None is not an HTTP response


def test_one_log_record_per_invocation(host, caplog):
    caplog.set_level(logging.INFO, logger="local.host")
    host.client.get("/api/hello/log")
    host.client.get("/api/boom")
    records = [r for r in caplog.records if getattr(r, "function", None) in ("hello", "boom")]
    assert [(r.function, r.outcome, r.trigger) for r in records] == [
        ("hello", "Succeeded", "httpTrigger"), ("boom", "Failed", "httpTrigger")]
    assert all(r.duration_ms >= 0 and r.invocation_id for r in records)
    assert "Executed 'Functions.hello' (Succeeded" in records[0].getMessage()


# --- Event Grid -----------------------------------------------------------------------------------------

def _eg(host: Host, body, event_type: str = "Notification", path: str = "/runtime/webhooks/EventGrid",
        function: str = "on_event", **headers) -> httpx.Response:
    return host.client.post(path, params={"functionName": function}, json=body,
                            headers={"aeg-event-type": event_type, **headers})


def test_subscription_validation_is_answered_by_the_host(host):
    before = len(sample.recorded("on_event"))
    event = {"id": "1", "topic": HUB, "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
             "eventTime": "2024-05-01T00:00:00Z", "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
             "dataVersion": "1", "metadataVersion": "1"}
    response = _eg(host, [event], event_type="SubscriptionValidation")
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert len(sample.recorded("on_event")) == before


def test_cloudevents_abuse_protection_handshake(host):
    response = host.client.options("/runtime/webhooks/EventGrid", params={"functionName": "on_event"},
                                   headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert response.status_code == 200
    assert response.headers["webhook-allowed-origin"] == "eventgrid.azure.net"


def test_event_grid_schema_batch_is_one_invocation_per_event(host):
    device = f"sensor-temp-FAC03-{uuid.uuid4().hex[:8]}"
    events = [{"id": f"{device}-{i}", "topic": HUB, "subject": f"devices/{device}",
               "eventType": "Microsoft.Devices.DeviceCreated", "eventTime": "2024-05-01T10:00:00.1234567Z",
               "data": {"hubName": "hub-eu", "deviceId": device, "n": i}, "dataVersion": "", "metadataVersion": "1"}
              for i in range(2)]
    assert _eg(host, events, path="/runtime/webhooks/eventgrid").status_code == 202
    seen = [e for e in sample.recorded("on_event") if e.id.startswith(device)]
    assert sorted(e.get_json()["n"] for e in seen) == [0, 1]
    first = next(e for e in seen if e.id.endswith("-0"))
    assert isinstance(first, func.EventGridEvent)
    assert (first.event_type, first.subject, first.topic) == ("Microsoft.Devices.DeviceCreated",
                                                             f"devices/{device}", HUB)
    assert first.event_time == datetime.fromisoformat("2024-05-01T10:00:00.123456+00:00")
    assert first.get_json()["deviceId"] == device


def test_cloudevents_single_and_batch(host):
    device = f"sensor-vib-FAC01-{uuid.uuid4().hex[:8]}"

    def cloud_event(i: int) -> dict:
        return {"specversion": "1.0", "id": f"{device}-{i}", "source": HUB, "type": "Microsoft.Devices.DeviceCreated",
                "subject": f"devices/{device}", "time": "2024-05-01T10:00:00Z", "data": {"deviceId": device}}

    assert _eg(host, cloud_event(0), **{"content-type": "application/cloudevents+json"}).status_code == 202
    batch = host.client.post("/runtime/webhooks/EventGrid", params={"functionName": "on_event"},
                             content=json.dumps([cloud_event(1), cloud_event(2)]),
                             headers={"aeg-event-type": "Notification",
                                      "content-type": "application/cloudevents-batch+json"})
    assert batch.status_code == 202
    seen = sorted((e for e in sample.recorded("on_event") if e.id.startswith(device)), key=lambda e: e.id)
    assert len(seen) == 3
    # azure-functions decodes an event with `specversion` into func.CloudEvent, as the worker does.
    assert all(isinstance(e, func.CloudEvent) for e in seen)
    assert (seen[0].type, seen[0].source, seen[0].subject) == ("Microsoft.Devices.DeviceCreated", HUB,
                                                              f"devices/{device}")
    assert seen[0].get_json() == {"deviceId": device}


def test_event_grid_errors(host):
    event = {"id": "x", "topic": HUB, "subject": "fail", "eventType": "t", "eventTime": "2024-05-01T00:00:00Z",
             "data": {}, "dataVersion": "1"}
    failed = _eg(host, [event])
    assert failed.status_code == 500 and "refused on purpose" in failed.text
    assert _eg(host, [event], function="nope").status_code == 404
    assert _eg(host, [event], event_type="").status_code == 400
    malformed = host.client.post("/runtime/webhooks/EventGrid", params={"functionName": "on_event"},
                                 content=b"{not json", headers={"aeg-event-type": "Notification"})
    assert malformed.status_code == 400


# --- admin API and timers -------------------------------------------------------------------------------

def test_admin_runs_a_timer_function(host):
    before = len(sample.recorded("nightly"))
    assert host.client.post("/admin/functions/nightly", json={"input": ""}).status_code == 401
    response = host.client.post("/admin/functions/nightly", json={"input": ""},
                                headers={"x-functions-key": host.keys.master_key})
    assert response.status_code == 202
    runs = wait_for(lambda: sample.recorded("nightly")[before:], what="timer run")
    assert runs[0].past_due is False


def test_admin_runs_a_queue_function_and_lists_functions(host):
    master = {"x-functions-key": host.keys.master_key}
    assert host.client.post("/admin/functions/work", json={"input": "by-hand"}, headers=master).status_code == 202
    wait_for(lambda: any(m.get_body() == b"by-hand" for m in sample.recorded("work")), what="queue run")
    assert host.client.post("/admin/functions/missing", json={"input": ""}, headers=master).status_code == 404
    assert host.client.post("/admin/functions/hello", json={"input": ""}, headers=master).status_code == 400
    listing = {f["name"]: f for f in host.client.get("/admin/functions", headers=master).json()}
    assert listing["hello"]["url"] == f"{host.url}/api/hello/{{name}}"
    assert listing["work"]["trigger"] == "queueTrigger"
    assert host.client.get("/admin/host/status").json()["state"] == "Running"


def test_banner_lists_functions_like_core_tools(host):
    text = banner(create_host_app(sample.app, HOST_JSON, None), "http://127.0.0.1:7071")
    assert text.startswith("Functions:")
    assert "  hello: [GET] http://127.0.0.1:7071/api/hello/{name}" in text
    assert "  nightly: timerTrigger" in text
    assert "functionName=on_event" in text


def test_timer_fires_on_schedule_and_on_startup(tmp_path):
    ticks: list[func.TimerRequest] = []
    app = func.FunctionApp()

    @app.timer_trigger(arg_name="timer", schedule="* * * * * *", run_on_startup=True)
    def every_second(timer: func.TimerRequest) -> None:
        ticks.append(timer)

    server = serve_in_thread(create_host_app(app, {}, None), free_port())
    try:
        wait_for(lambda: len(ticks) >= 3, timeout=5, what="three timer runs")
    finally:
        server.stop()
    assert all(t.past_due is False for t in ticks)
    assert ticks[1].schedule_status["Next"] > ticks[1].schedule_status["Last"]


# --- queue triggers -------------------------------------------------------------------------------------

def _queue(host: Host, name: str, encoded: bool = True) -> QueueClient:
    policies = {"message_encode_policy": TextBase64EncodePolicy(),
                "message_decode_policy": TextBase64DecodePolicy()} if encoded else {}
    return QueueClient.from_connection_string(host.connection_string, name, **policies)


def test_queue_message_is_processed_and_deleted(host):
    body = f"hello-{uuid.uuid4().hex[:6]}"
    wait_for(lambda: _exists(_queue(host, sample.QUEUE_NAME)), what="the listener to create its queue")
    _queue(host, sample.QUEUE_NAME).send_message(body)
    message = wait_for(lambda: next((m for m in sample.recorded("work") if m.get_body() == body.encode()), None),
                       what="queue function run")
    assert message.dequeue_count == 1
    assert message.id and message.insertion_time and message.expiration_time
    wait_for(lambda: not _queue(host, sample.QUEUE_NAME).peek_messages(max_messages=32), what="message deleted")


def test_failing_message_goes_to_poison_after_max_dequeue_count(host):
    queue, poison = _queue(host, sample.QUEUE_NAME), _queue(host, f"{sample.QUEUE_NAME}-poison")
    wait_for(lambda: _exists(queue), what="the listener to create its queue")
    queue.send_message("poison")
    moved = wait_for(lambda: _exists(poison) and poison.peek_messages(max_messages=32), what="poison message")
    assert [m.content for m in moved] == ["poison"]
    attempts = [count for body, count in sample.recorded("work-attempts") if body == "poison"]
    assert attempts == [1, 2]  # maxDequeueCount 2: tried twice, 1 s apart (visibilityTimeout), then moved
    assert not queue.peek_messages(max_messages=32)
    poison.clear_messages()


def test_message_that_is_not_base64_goes_to_poison_unprocessed(host):
    raw, poison = _queue(host, sample.QUEUE_NAME, encoded=False), _queue(host, f"{sample.QUEUE_NAME}-poison",
                                                                         encoded=False)
    wait_for(lambda: _exists(raw), what="the listener to create its queue")
    before = len(sample.recorded("work-attempts"))
    raw.send_message("not base64 at all!")
    moved = wait_for(lambda: _exists(poison) and poison.peek_messages(max_messages=32), what="poison message")
    assert [m.content for m in moved] == ["not base64 at all!"]
    assert len(sample.recorded("work-attempts")) == before
    poison.clear_messages()


def _exists(client: QueueClient) -> bool:
    try:
        client.get_queue_properties()
    except Exception:
        return False
    return True
