"""Event Grid delivery of the IoT Hub emulator: retries, dead-lettering, persistence (mocked transport)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx

from local.iothub.config import DEVICE_CREATED, DEVICE_DELETED, HubConfig
from local.iothub.events import EventPublisher
from local.iothub.store import Collection, HubStore

TWIN = {"deviceId": "sensor-1", "etag": "AAAAAAAAAAE=", "version": 2}


def config(tmp_path: Path, **overrides) -> HubConfig:
    values = {
        "name": "iothub-west-local",
        "host_name": "localhost:8441",
        "state_dir": tmp_path,
        "policies": {},
        "event_grid_url": "http://subscriber/api/events",
        "event_backoff_s": (0.01, 0.05),
    }
    values.update(overrides)
    return HubConfig(**values)


def run_until(publisher: EventPublisher, done, timeout: float = 5) -> None:
    async def main():
        task = asyncio.create_task(publisher.run())
        deadline = asyncio.get_running_loop().time() + timeout
        while not done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def publisher_with(tmp_path: Path, answers: list[int], seen: list[httpx.Request], **overrides) -> EventPublisher:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(answers.pop(0) if answers else 200)

    store = HubStore(tmp_path)
    factory = lambda: httpx.AsyncClient(transport=httpx.MockTransport(handler))  # noqa: E731
    return EventPublisher(config(tmp_path, **overrides), store, factory)


def test_failed_deliveries_are_retried_until_the_subscriber_accepts(tmp_path):
    seen: list[httpx.Request] = []
    publisher = publisher_with(tmp_path, [503, 500], seen)
    publisher.publish(DEVICE_CREATED, "sensor-1", TWIN)
    run_until(publisher, lambda: len(seen) >= 3 and len(Collection(tmp_path / "outbox")) == 0)
    assert len(seen) == 3
    assert [r.headers["aeg-delivery-count"] for r in seen] == ["0", "1", "2"]
    bodies = [json.loads(r.content) for r in seen]
    assert bodies[0] == bodies[2] and len(bodies[0]) == 1  # the same event, an array of one
    assert bodies[0][0]["data"] == {"twin": TWIN, "hubName": "iothub-west-local", "deviceId": "sensor-1"}
    assert len(Collection(tmp_path / "outbox")) == 0


def test_400_is_dead_lettered_not_retried(tmp_path):
    seen: list[httpx.Request] = []
    publisher = publisher_with(tmp_path, [400], seen)
    publisher.publish(DEVICE_CREATED, "sensor-1", TWIN)
    run_until(publisher, lambda: list((tmp_path / "dead-letters").glob("*.json")))
    assert len(seen) == 1
    letter = json.loads(next((tmp_path / "dead-letters").glob("*.json")).read_text())
    assert letter["reason"] == "HTTP 400" and letter["event"]["subject"] == "devices/sensor-1"


def test_events_outlive_the_publisher_and_are_sent_by_the_next_one(tmp_path):
    publisher_with(tmp_path, [], []).publish(DEVICE_DELETED, "sensor-1", TWIN)  # never runs
    seen: list[httpx.Request] = []
    publisher = publisher_with(tmp_path, [], seen)
    run_until(publisher, lambda: bool(seen))
    assert json.loads(seen[0].content)[0]["eventType"] == DEVICE_DELETED


def test_filtered_types_and_no_subscriber_queue_nothing(tmp_path):
    publisher_with(tmp_path, [], [], event_types=frozenset({DEVICE_CREATED})).publish(DEVICE_DELETED, "s", TWIN)
    publisher_with(tmp_path, [], [], event_grid_url=None).publish(DEVICE_CREATED, "s", TWIN)
    assert len(Collection(tmp_path / "outbox")) == 0


def _subjects(request: httpx.Request) -> list[str]:
    return [event["subject"] for event in json.loads(request.content)]


def test_waiting_events_go_out_together_up_to_the_batch_size(tmp_path):
    seen: list[httpx.Request] = []
    publisher = publisher_with(tmp_path, [], seen, event_max_batch=2)
    for n in range(5):
        publisher.publish(DEVICE_CREATED, f"sensor-{n}", TWIN)
    run_until(publisher, lambda: len(Collection(tmp_path / "outbox")) == 0)
    assert sorted(len(_subjects(r)) for r in seen) == [1, 2, 2]  # maxEventsPerBatch 2: three POSTs, not five
    assert sorted(s for r in seen for s in _subjects(r)) == [f"devices/sensor-{n}" for n in range(5)]


def test_a_failed_batch_is_delivered_again_whole(tmp_path):
    seen: list[httpx.Request] = []
    publisher = publisher_with(tmp_path, [503], seen)
    for n in range(3):
        publisher.publish(DEVICE_CREATED, f"sensor-{n}", TWIN)
    run_until(publisher, lambda: len(seen) >= 2 and len(Collection(tmp_path / "outbox")) == 0)
    assert len(seen) == 2
    assert _subjects(seen[0]) == _subjects(seen[1]) and len(_subjects(seen[0])) == 3
    assert [r.headers["aeg-delivery-count"] for r in seen] == ["0", "1"]
