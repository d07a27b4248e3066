"""Event Grid semantics of the hub emulator's delivery (local/iothub/events.py; docs/contracts.md 2.2): a
subscriber that answers 500 for a while gets the event once it recovers, on Event Grid's schedule (scaled down);
one that always fails has the event dead-lettered in Azurite, where Event Grid writes it, with the reason."""

from __future__ import annotations

import itertools
import json
import re
import time

import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.storage.blob import BlobServiceClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from local.iothub.app import create_app
from local.iothub.config import connection_string
from local.iothub.events import DeadLetterTarget, DeliveryPolicy
from local.serve import free_port, serve_in_thread
from tests.integration.test_iothub_emulator import hub_config, stop, unique

pytestmark = pytest.mark.integration
SCALE = 0.01  # Event Grid's 10 s, 30 s, 1 min ... become 0.1 s, 0.3 s, 0.6 s ...


class FailingSubscriber:
    """An Event Grid subscriber (the dev host's endpoint) that answers `status` to the first `failures`
    deliveries, then 200; records when each delivery came and its aeg-delivery-count."""

    def __init__(self, failures: int, status: int = 500):
        self.failures, self.status = failures, status
        self.deliveries: list[tuple[float, str, list]] = []
        self.port = free_port()

        async def receive(request: Request) -> JSONResponse:
            self.deliveries.append((time.monotonic(), request.headers["aeg-delivery-count"], await request.json()))
            failing = len(self.deliveries) <= self.failures
            return JSONResponse({}, self.status if failing else 200)

        self.server = serve_in_thread(Starlette(routes=[Route("/api/events", receive, methods=["POST"])]), self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/events"


def run_hub(tls, tmp_path, subscriber: FailingSubscriber, policy: DeliveryPolicy):
    port = free_port()
    config = hub_config(tmp_path, port, event_grid_url=subscriber.url)
    app = create_app(config, policy)
    return config, app, serve_in_thread(app, port, tls)


def wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_subscriber_failing_for_a_while_gets_the_event_on_event_grids_schedule(tls, tmp_path):
    subscriber = FailingSubscriber(failures=3)
    config, app, server = run_hub(tls, tmp_path, subscriber, DeliveryPolicy.scaled(SCALE))
    registry = IoTHubRegistryManager.from_connection_string(connection_string(config))
    try:
        device_id = unique("sensor-temp-FAC01")
        registry.create_device_with_certificate_authority(device_id, "enabled")
        wait_until(lambda: len(subscriber.deliveries) >= 4, timeout=10)
        summary = app.state.hub.events.summary()
    finally:
        stop(server, registry)
        subscriber.server.stop()
    times = [at for at, _, _ in subscriber.deliveries]
    assert [count for _, count, _ in subscriber.deliveries] == ["0", "1", "2", "3"]
    assert {event["subject"] for _, _, batch in subscriber.deliveries for event in batch} == {f"devices/{device_id}"}
    waits = [later - earlier for earlier, later in itertools.pairwise(times)]
    # 10 s, 30 s, 1 min (scaled): never sooner than Event Grid's step (a slow machine may make them later)
    for wait, step in zip(waits, (10, 30, 60), strict=True):
        assert wait >= step * SCALE, waits
    assert summary["delivered"] == 1 and summary["deliveredAfterRetry"] == 1 and summary["failedAttempts"] == 3
    assert summary["pending"] == {"delivery": 0, "deadLetter": 0}


def test_a_subscriber_that_always_fails_has_the_event_dead_lettered_in_blob_with_the_reason(tls, tmp_path, azurite):
    subscriber = FailingSubscriber(failures=10**6)
    target = DeadLetterTarget(azurite, container="eventgrid-deadletter")
    policy = DeliveryPolicy.scaled(SCALE, max_attempts=4, dead_letter=target)
    config, app, server = run_hub(tls, tmp_path, subscriber, policy)
    registry = IoTHubRegistryManager.from_connection_string(connection_string(config))
    try:
        device_id = unique("sensor-temp-FAC02")
        registry.create_device_with_certificate_authority(device_id, "enabled")
        wait_until(lambda: app.state.hub.events.stats["deadLettered"] >= 1, timeout=20)
        summary = app.state.hub.events.summary()
    finally:
        stop(server, registry)
        subscriber.server.stop()
    assert len(subscriber.deliveries) == 4  # maxDeliveryAttempts, then no more
    assert summary["deadLettered"] == 1 and summary["pending"] == {"delivery": 0, "deadLetter": 0}
    container = BlobServiceClient.from_connection_string(azurite).get_container_client("eventgrid-deadletter")
    blobs = [b.name for b in container.list_blobs(name_starts_with="DEVICE-CREATED-TO-ON_DEVICE_CREATED/")]
    letters = [json.loads(container.download_blob(name).readall()) for name in blobs]
    mine = [(name, e) for name, body in zip(blobs, letters, strict=True) for e in body
            if e["subject"] == f"devices/{device_id}"]
    assert len(mine) == 1
    name, letter = mine[0]
    # {SUBSCRIPTION}/{YYYY}/{M}/{D}/{H}/{guid}.json, not zero-padded
    assert re.fullmatch(r"DEVICE-CREATED-TO-ON_DEVICE_CREATED/\d{4}/[1-9]\d?/[1-9]\d?/\d{1,2}/[0-9a-f-]{36}\.json",
                        name), name
    assert letter["eventType"] == "Microsoft.Devices.DeviceCreated" and letter["data"]["deviceId"] == device_id
    assert letter["deadLetterReason"] == "MaxDeliveryAttemptsExceeded" and letter["deliveryAttempts"] == 4
    assert letter["lastDeliveryOutcome"] == "InternalServerError" and letter["lastHttpStatusCode"] == 500
    assert letter["publishTime"].endswith("Z") and letter["lastDeliveryAttemptTime"] >= letter["publishTime"]


def test_a_400_is_dead_lettered_at_once_without_retries(tls, tmp_path, azurite):
    subscriber = FailingSubscriber(failures=10**6, status=400)
    policy = DeliveryPolicy.scaled(SCALE, dead_letter=DeadLetterTarget(azurite))
    config, app, server = run_hub(tls, tmp_path, subscriber, policy)
    registry = IoTHubRegistryManager.from_connection_string(connection_string(config))
    try:
        registry.create_device_with_certificate_authority(unique("sensor-temp-FAC03"), "enabled")
        wait_until(lambda: app.state.hub.events.stats["deadLettered"] >= 1, timeout=10)
    finally:
        stop(server, registry)
        subscriber.server.stop()
    assert len(subscriber.deliveries) == 1
    record = json.loads(next((tmp_path / "dead-letters").glob("*.json")).read_text())
    assert record["deadLetterReason"] == "UndeliverableDueToHttpBadRequest" and record["reason"] == "HTTP 400"
    assert record["blob"].startswith("eventgrid-deadletter/DEVICE-CREATED-TO-ON_DEVICE_CREATED/")
