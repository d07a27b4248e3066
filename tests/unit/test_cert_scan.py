"""The expiry scan, the renewal worker and the hub adapter, over an in-memory hub that evaluates the real query
language (the emulator's evaluator) and pages like IoT Hub."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections import Counter
from types import SimpleNamespace

import pytest
from msrest.exceptions import HttpOperationError

from cert_lifecycle.alerts import AlertSender, QueueSender
from cert_lifecycle.expiry import TAG
from cert_lifecycle.renewal import InvalidRenewalMessage, RenewalService, parse_renewal_message
from cert_lifecycle.scan import ExpiryScanner
from cert_lifecycle.settings import LifecycleSettings
from local.iothub import query as q
from shared.facilities import Facility
from shared.iothub import HubUnavailable, IotHub, Twin
from shared.iothub import PreconditionFailed as HubConflict
from shared.retry import RetryPolicy

NOW = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)
HUB = "hub-west.azure-devices.net"


def merge(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeHubs:
    """The IoT Hub adapter's interface (shared.iothub.IotHub) over in-memory twins."""

    def __init__(self):
        self.twins: dict[str, dict] = {}
        self.queries: Counter[str] = Counter()
        self.conflict_once: set[str] = set()
        self.writes: list[tuple[str, dict | None, dict | None]] = []

    def add(self, device_id: str, days_left: float | None, lifetime: int = 730, serial: str = "1AB", tags=None):
        reported = {}
        if days_left is not None:
            not_after = NOW + dt.timedelta(days=days_left)
            reported["certificate"] = {"serialNumber": serial, "notAfter": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                       "notBefore": (not_after - dt.timedelta(days=lifetime)).isoformat()}
        self.twins[device_id] = {"deviceId": device_id, "etag": "1", "tags": tags or {},
                                 "properties": {"desired": {}, "reported": reported}}

    def _view(self, doc: dict) -> Twin:
        return Twin(doc["deviceId"], HUB, doc["etag"], copy.deepcopy(doc["tags"]),
                          copy.deepcopy(doc["properties"]["reported"]), copy.deepcopy(doc["properties"]["desired"]))

    def query(self, host, text, page_size=1000, max_pages=None):
        parsed = q.parse(text)
        matching = [d for d in sorted(self.twins.values(), key=lambda d: d["deviceId"]) if q.matches(parsed, d)]
        pages = 0
        for start in range(0, max(len(matching), 1), page_size):
            self.queries[host] += 1
            pages += 1
            yield from (self._view(d) for d in matching[start:start + page_size])
            if max_pages is not None and pages >= max_pages:
                return

    def get_twin(self, host, device_id):
        doc = self.twins.get(device_id)
        return None if doc is None else self._view(doc)

    def update_twin(self, host, device_id, patch, etag):
        tags, desired = patch.get("tags"), (patch.get("properties") or {}).get("desired")
        doc = self.twins[device_id]
        if device_id in self.conflict_once:
            self.conflict_once.discard(device_id)
            doc["etag"] = str(int(doc["etag"]) + 1)
            raise HubConflict(device_id)
        if etag not in (None, "*", doc["etag"]):
            raise HubConflict(device_id)
        merge(doc["tags"], tags or {})
        merge(doc["properties"]["desired"], desired or {})
        doc["etag"] = str(int(doc["etag"]) + 1)
        self.writes.append((device_id, tags, desired))
        return self._view(doc)


class FakeQueues(QueueSender):
    def __init__(self, fail_for: set[str] = frozenset()):
        self.sent: dict[str, list[dict]] = {}
        self.fail_for = set(fail_for)

    def send(self, queue, message):
        if message.get("deviceId") in self.fail_for:
            raise ConnectionError("queue down")
        self.sent.setdefault(queue, []).append(json.loads(json.dumps(message)))


class FakeRecords:
    def facility(self, code):
        plants = {"FAC01": Facility("FAC01", "Portland", "west", "localhost:8441", "manager.fac01@example.com", True),
                  "FAC02": Facility("FAC02", "Sacramento", "west", "localhost:8441", "manager.fac02@example.com", True)}
        return plants.get(code)


class FakeAudit:
    def __init__(self):
        self.rows = []

    def certificate_event(self, action, **fields):
        self.rows.append((action, fields))
        return True


def scanner(hubs, queues, **settings):
    lifecycle = LifecycleSettings(escalation_email="security@example.com", **settings)
    return ExpiryScanner(hubs, [HUB], lambda m: queues.send("certificate-renewals", m),
                         AlertSender(queues, lifecycle), FakeRecords(), FakeAudit(), lifecycle)


def renewals(queues):
    return [m["deviceId"] for m in queues.sent.get("certificate-renewals", [])]


def test_queries_page_in_the_hub_and_count_only_devices_needing_action():
    hubs, queues = FakeHubs(), FakeQueues()
    for i in range(5):
        hubs.add(f"sensor-temp-FAC01-N{i}", days_left=10 + i)
    for i in range(20):
        hubs.add(f"sensor-temp-FAC01-OK{i}", days_left=500)
    hubs.add("sensor-temp-FAC01-SILENT", days_left=None)
    report = scanner(hubs, queues, scan_page_size=2).run(NOW)
    assert report.queries == 3 + 1  # 5 in window over pages of 2, and one page of devices without certificate
    assert report.levels == {"ok": 0, "renew": 0, "critical": 5, "expired": 0}
    assert report.hubs[0].without_certificate_listed == ["sensor-temp-FAC01-SILENT"]
    assert sorted(renewals(queues)) == [f"sensor-temp-FAC01-N{i}" for i in range(5)]


def test_a_failed_queue_send_leaves_no_tag_so_the_next_scan_sends_it():
    hubs, queues = FakeHubs(), FakeQueues(fail_for={"sensor-temp-FAC01-B"})
    hubs.add("sensor-temp-FAC01-A", 60)
    hubs.add("sensor-temp-FAC01-B", 60)
    first = scanner(hubs, queues).run(NOW)
    assert renewals(queues) == ["sensor-temp-FAC01-A"] and first.failures
    assert TAG not in hubs.twins["sensor-temp-FAC01-B"]["tags"]
    queues.fail_for.clear()
    scanner(hubs, queues).run(NOW)
    assert renewals(queues) == ["sensor-temp-FAC01-A", "sensor-temp-FAC01-B"]


def test_one_digest_per_facility_and_level_with_escalation_for_critical_and_expired():
    hubs, queues = FakeHubs(), FakeQueues()
    for name, days in [("A", 60), ("B", 70), ("C", 20), ("D", -3)]:
        hubs.add(f"sensor-temp-FAC01-{name}", days)
    hubs.add("sensor-temp-FAC02-E", 50)
    hubs.add("sensor-temp-FAC77-F", 10)  # a facility SQL does not know
    report = scanner(hubs, queues).run(NOW)
    digests = {(d["facility"], d["level"]): d for d in queues.sent["certificate-alerts"]}
    assert set(digests) == {("FAC01", "renew"), ("FAC01", "critical"), ("FAC01", "expired"), ("FAC02", "renew"),
                            ("FAC77", "critical")}
    assert digests[("FAC01", "renew")]["count"] == 2 and digests[("FAC01", "renew")]["cc"] == []
    assert digests[("FAC01", "critical")]["cc"] == ["security@example.com"]
    assert digests[("FAC01", "expired")]["to"] == ["manager.fac01@example.com"]
    assert digests[("FAC77", "critical")]["to"] == ["security@example.com"]
    assert len(report.digests) == 5
    again = scanner(hubs, queues).run(NOW)
    assert again.digests == [] and again.queued == []
    tomorrow = scanner(hubs, queues).run(NOW + dt.timedelta(days=1))
    assert sorted(tomorrow.digests) == ["2026-11-24:FAC01:critical", "2026-11-24:FAC01:expired",
                                        "2026-11-24:FAC77:critical"]  # reminders, not new renewals
    assert tomorrow.queued == []


def test_a_tag_write_racing_the_worker_keeps_the_workers_state():
    hubs, queues = FakeHubs(), FakeQueues()
    hubs.add("sensor-temp-FAC01-A", 60)
    hubs.conflict_once.add("sensor-temp-FAC01-A")
    hubs.twins["sensor-temp-FAC01-A"]["tags"][TAG] = {"state": "requested", "serialNumber": "1AB",
                                                      "requestId": "r1", "level": "renew"}
    hubs.twins["sensor-temp-FAC01-A"]["tags"][TAG]["level"] = None  # as if the scan had not seen it yet
    scanner(hubs, queues).run(NOW)
    tag = hubs.twins["sensor-temp-FAC01-A"]["tags"][TAG]
    assert (tag["state"], tag["requestId"], tag["level"]) == ("requested", "r1", "renew")


# -- the renewal worker -----------------------------------------------------------------------------------
def worker(hubs):
    return RenewalService(hubs, [HUB], issuer=None, cas=None, revoker=None, records=None, audit=FakeAudit(),
                          settings=LifecycleSettings(), now=lambda: NOW)


def test_the_worker_requests_once_and_keeps_the_request_on_escalation():
    hubs = FakeHubs()
    hubs.add("sensor-temp-FAC01-A", 60)
    service = worker(hubs)
    message = parse_renewal_message({"deviceId": "sensor-temp-FAC01-A", "hub": HUB, "serialNumber": "01ab",
                                     "level": "renew"}, [HUB])
    assert service.request(message) == "requested"
    desired = hubs.twins["sensor-temp-FAC01-A"]["properties"]["desired"][TAG]
    assert desired["status"] == "requested" and desired["serialNumber"] == "1AB"
    request_id = desired["requestId"]
    assert service.request(message) == "already_requested"
    critical = parse_renewal_message({"deviceId": "sensor-temp-FAC01-A", "hub": HUB, "serialNumber": "1AB",
                                      "level": "critical"}, [HUB])
    assert service.request(critical) == "already_requested"
    twin = hubs.twins["sensor-temp-FAC01-A"]
    assert twin["properties"]["desired"][TAG]["requestId"] == request_id and twin["tags"][TAG]["level"] == "critical"
    assert not any("PRIVATE" in json.dumps(w) for w in hubs.writes)


def test_the_worker_ignores_stale_messages_and_vanished_devices():
    hubs = FakeHubs()
    hubs.add("sensor-temp-FAC01-A", 60, serial="FF")
    stale = parse_renewal_message({"deviceId": "sensor-temp-FAC01-A", "hub": HUB, "serialNumber": "1AB",
                                   "level": "renew"}, [HUB])
    assert worker(hubs).request(stale) == "stale" and hubs.writes == []
    gone = parse_renewal_message({"deviceId": "sensor-temp-FAC01-Z", "hub": HUB, "serialNumber": "1AB",
                                  "level": "renew"}, [HUB])
    assert worker(hubs).request(gone) == "device_gone"


@pytest.mark.parametrize("message", [
    None, [], {"deviceId": "x", "hub": HUB, "serialNumber": "1", "level": "renew"},
    {"deviceId": "sensor-temp-FAC01-A", "hub": "elsewhere", "serialNumber": "1", "level": "renew"},
    {"deviceId": "sensor-temp-FAC01-A", "hub": HUB, "serialNumber": "xyz", "level": "renew"},
    {"deviceId": "sensor-temp-FAC01-A", "hub": HUB, "serialNumber": "1", "level": "panic"},
])
def test_malformed_renewal_messages_are_refused(message):
    with pytest.raises(InvalidRenewalMessage):
        parse_renewal_message(message, [HUB])


# -- the hub adapter's retries ---------------------------------------------------------------------------
class Throttled(HttpOperationError):
    def __init__(self, status, retry_after=None):
        Exception.__init__(self, f"HTTP {status}")
        self.response = SimpleNamespace(status_code=status, headers={"Retry-After": retry_after} if retry_after else {})


class FlakyRegistry:
    """An IoTHubRegistryManager whose protocol layer fails as scripted, then answers GET /twins/{id}."""

    def __init__(self, failures):
        self.failures = list(failures)
        self.protocol = SimpleNamespace(devices=SimpleNamespace(get_twin=self._get_twin))

    def _get_twin(self, device_id, raw=False, timeout=None):
        if self.failures:
            raise self.failures.pop(0)
        doc = {"deviceId": device_id, "etag": "e", "tags": {}, "properties": {"desired": {}, "reported": {}}}
        return SimpleNamespace(response=SimpleNamespace(json=lambda: doc))


def gateway_over(registry, sleep, **policy):
    return IotHub(lambda host: registry, RetryPolicy(**{"attempts": 5, "budget_s": 60, **policy}), 10, sleep=sleep,
                  rng=lambda: 0.0)


def test_throttling_is_retried_honouring_retry_after():
    waits, registry = [], FlakyRegistry([Throttled(429, "2"), Throttled(503)])
    gateway = gateway_over(registry, waits.append)
    assert gateway.get_twin(HUB, "d").device_id == "d"
    assert waits[0] == 2.0 and 0.25 <= waits[1] <= 1.0


def test_permanent_errors_are_not_retried_and_exhaustion_surfaces():
    gateway = gateway_over(FlakyRegistry([Throttled(404)]), lambda s: None)
    assert gateway.get_twin(HUB, "d") is None
    always = FlakyRegistry([Throttled(429, "1")] * 9)
    gateway = gateway_over(always, lambda s: None, attempts=3)
    with pytest.raises(HubUnavailable):
        gateway.get_twin(HUB, "d")
    gateway = gateway_over(FlakyRegistry([Throttled(429, "100")]), lambda s: None, budget_s=10)
    with pytest.raises(HubUnavailable):  # the hub asks for longer than the budget allows
        gateway.get_twin(HUB, "d")
