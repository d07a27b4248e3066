"""The hub's registry, twin, query and statistics operations, independent of HTTP.

Each mutation is one read-modify-write under the store's lock, persisted before it returns; lifecycle events
are queued in the same critical section, so an event exists for every device that was created.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from typing import Any

from local.iothub import query as q
from local.iothub import twin as tw
from local.iothub.config import DEVICE_CREATED, DEVICE_DELETED, HubConfig
from local.iothub.devices import build_device, check_device_id, new_etag, new_key
from local.iothub.errors import HubError, bad_request, device_not_found, precondition_failed
from local.iothub.events import EventPublisher, event_time
from local.iothub.store import HubStore

SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")


MAX_BULK_DEVICES = 100  # IoT Hub's limit per bulk registry call


def etag_matches(if_match: str | None, current: str) -> bool:
    """If-Match against an etag. azure-iot-hub quotes etags, the wildcard too (`"*"`, its unconditional
    delete); weak W/ prefixes are tolerated."""
    if if_match is None:
        return True
    value = if_match.strip().removeprefix("W/").strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value in ("*", current)


def new_module(device_id: str, module_id: str, now: str, managed_by: str | None = None) -> dict[str, Any]:
    return {
        "moduleId": module_id,
        "managedBy": managed_by,
        "deviceId": device_id,
        "generationId": new_etag(),
        "etag": new_etag(),
        "connectionState": "Disconnected",
        "connectionStateUpdatedTime": "0001-01-01T00:00:00Z",
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": {"primaryKey": new_key(), "secondaryKey": new_key()},
            "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
            "type": "sas",
        },
        "twin": tw.new_state(now),
    }


class HubService:
    def __init__(self, config: HubConfig, store: HubStore, events: EventPublisher):
        self.config = config
        self.store = store
        self.events = events
        self.on_twin_change: Callable[[str], None] = lambda device_id: None  # wakes device-side long polls

    # -- records ---------------------------------------------------------------------------------------
    def record(self, device_id: str) -> dict[str, Any]:
        found = self.store.devices.get(device_id)
        if found is None:
            raise device_not_found(device_id)
        return found

    def twin_view(self, record: dict[str, Any]) -> dict[str, Any]:
        return tw.device_twin_view(record["device"], record["twin"])

    # -- identity registry -----------------------------------------------------------------------------
    def get_device(self, device_id: str) -> dict[str, Any]:
        return self.record(device_id)["device"]

    def list_devices(self, top: int | None) -> list[dict[str, Any]]:
        limit = top if top is not None and 1 <= top <= 1000 else 1000
        with self.store.lock:
            return [r["device"] for r in list(self.store.devices.values())[:limit]]

    def put_device(self, device_id: str, body: dict[str, Any], if_match: str | None) -> dict[str, Any]:
        check_device_id(device_id)
        now = event_time()
        with self.store.lock:
            existing = self.store.devices.get(device_id)
            if existing is None:
                if if_match is not None:
                    raise device_not_found(device_id)
                record = {"device": build_device(body, device_id, None, now), "twin": tw.new_state(now), "modules": {}}
            else:
                if if_match is None:
                    raise HubError(409, "DeviceAlreadyExists", f"A device with ID '{device_id}' is already registered.")
                if not etag_matches(if_match, existing["device"]["etag"]):
                    raise precondition_failed("device")
                record = {**existing, "device": build_device(body, device_id, existing["device"], now)}
            if record["device"]["capabilities"]["iotEdge"]:
                for module_id in SYSTEM_MODULES:
                    record["modules"].setdefault(module_id, new_module(device_id, module_id, now))
            self.store.devices.put(device_id, record)
            if existing is None:
                self.events.publish(DEVICE_CREATED, device_id, self.twin_view(record))
        return record["device"]

    def create_with_twin(self, entry: dict[str, Any]) -> None:
        """Create one device with its initial tags and desired properties in one step, as DPS does (bulk
        registry importMode create). The DeviceCreated event therefore carries the initial twin."""
        device_id = entry.get("id")
        if not isinstance(device_id, str):
            raise bad_request("Each device needs an id.")
        check_device_id(device_id)
        limits = self.config.twin_limits
        tags = tw.validate_section(entry.get("tags") or {}, "tags", limits)
        properties = entry.get("properties") or {}
        if not isinstance(properties, dict):
            raise bad_request("properties must be a JSON object.")
        desired = tw.validate_section(tw.strip_system(properties.get("desired") or {}), "properties.desired", limits)
        now = event_time()
        body = {"status": entry.get("status"), "authentication": entry.get("authentication"),
                "capabilities": entry.get("capabilities"), "parentScopes": entry.get("parentScopes")}
        with self.store.lock:
            if device_id in self.store.devices:
                raise HubError(409, "DeviceAlreadyExists", f"A device with ID '{device_id}' is already registered.")
            twin = tw.apply_service_update(tw.new_state(now), tags or None, desired or None, limits, now, False)
            record = {"device": build_device({k: v for k, v in body.items() if v is not None}, device_id, None, now),
                      "twin": twin, "modules": {}}
            if record["device"]["capabilities"]["iotEdge"]:
                for module_id in SYSTEM_MODULES:
                    record["modules"].setdefault(module_id, new_module(device_id, module_id, now))
            self.store.devices.put(device_id, record)
            self.events.publish(DEVICE_CREATED, device_id, self.twin_view(record))

    def bulk_update(self, entries: Any) -> tuple[int, dict[str, Any]]:
        """POST /devices: bulk registry operations. Only importMode create is supported by the emulator."""
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_BULK_DEVICES:
            raise bad_request(f"A bulk registry operation takes 1 to {MAX_BULK_DEVICES} devices.")
        errors = []
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("importMode", "create") != "create":
                raise bad_request("The local IoT Hub emulator supports bulk importMode 'create' only.")
            try:
                self.create_with_twin(entry)
            except HubError as exc:
                errors.append({"deviceId": entry.get("id"), "errorCode": exc.code, "errorStatus": exc.message,
                               "operation": "create"})
        return (200 if not errors else 400), {"isSuccessful": not errors, "errors": errors, "warnings": []}

    def delete_device(self, device_id: str, if_match: str | None) -> None:
        with self.store.lock:
            record = self.record(device_id)
            if not etag_matches(if_match, record["device"]["etag"]):
                raise precondition_failed("device")
            self.store.devices.delete(device_id)
            self.events.publish(DEVICE_DELETED, device_id, self.twin_view(record))

    # -- twins -----------------------------------------------------------------------------------------
    def get_twin(self, device_id: str) -> dict[str, Any]:
        return self.twin_view(self.record(device_id))

    def update_twin(self, device_id: str, body: Any, if_match: str | None, replace: bool) -> dict[str, Any]:
        """PATCH (merge) or PUT (replace) of tags and desired properties by the back end."""
        if not isinstance(body, dict):
            raise bad_request("The twin must be a JSON object.")
        limits = self.config.twin_limits
        tags = tw.validate_section(body.get("tags"), "tags", limits) if "tags" in body else None
        properties = body.get("properties")
        if properties is not None and not isinstance(properties, dict):
            raise bad_request("properties must be a JSON object.")
        desired = None
        if properties and "desired" in properties:
            desired = tw.validate_section(tw.strip_system(properties["desired"]), "properties.desired", limits)
        with self.store.lock:
            record = self.record(device_id)
            if not etag_matches(if_match, tw.twin_etag(record["twin"]["etagSeq"])):
                raise precondition_failed("twin")
            if replace or tags is not None or desired is not None:
                record["twin"] = tw.apply_service_update(record["twin"], tags, desired, limits, event_time(), replace)
                self.store.devices.put(device_id, record)
                self.on_twin_change(device_id)
        return self.twin_view(record)

    def update_reported(self, device_id: str, patch: Any) -> dict[str, Any]:
        """A device's partial update of its reported properties (emulator-only device-side route)."""
        limits = self.config.twin_limits
        patch = tw.validate_section(tw.strip_system(patch), "properties.reported", limits)
        if not patch:
            raise bad_request("The reported properties patch must be a non-empty JSON object.")
        now = event_time()
        with self.store.lock:
            record = self.record(device_id)
            record["twin"] = tw.apply_reported(record["twin"], patch, limits, now)
            record["device"]["lastActivityTime"] = now
            self.store.devices.put(device_id, record)
        return self.twin_view(record)

    # -- the device side -----------------------------------------------------------------------------------
    def touch_activity(self, device_id: str, now: str | None = None) -> None:
        """A device call succeeded: its lastActivityTime ("the last time the device authenticated, sent a
        message, or received a message": azure-iothub's Device model) moves, in memory only (store.py,
        volatile fields). connectionState is left alone: IoT Hub keeps it for MQTT and AMQP connections, not
        HTTPS ones (same source: "or if the device is using HTTPS to connect")."""
        with self.store.lock:
            self.store.devices.touch(device_id, {"device": {"lastActivityTime": now or event_time()}})

    def record_message(self, device_id: str, size: int, properties: dict[str, str]) -> dict[str, Any]:
        """Count one device-to-cloud message (the emulator routes no messages anywhere: it keeps per-device
        counters that tests and the demo read, volatile as lastActivityTime is)."""
        now = event_time()
        with self.store.lock:
            record = self.store.devices.peek(device_id)
            if record is None:
                raise device_not_found(device_id)
            stats = record.get("messages") or {}
            stats = {
                "messageCount": stats.get("messageCount", 0) + 1,
                "totalBytes": stats.get("totalBytes", 0) + size,
                "firstMessageTime": stats.get("firstMessageTime") or now,
                "lastMessageTime": now,
                "lastProperties": properties,
            }
            self.store.devices.touch(device_id, {"messages": stats})
        return stats

    def message_stats(self, device_id: str) -> dict[str, Any]:
        stats = self.record(device_id).get("messages") or {}
        return {"deviceId": device_id, "messageCount": stats.get("messageCount", 0),
                "totalBytes": stats.get("totalBytes", 0), "firstMessageTime": stats.get("firstMessageTime"),
                "lastMessageTime": stats.get("lastMessageTime"), "lastProperties": stats.get("lastProperties") or {}}

    def hub_message_stats(self) -> dict[str, int]:
        with self.store.lock:
            counts = [(r.get("messages") or {}).get("messageCount", 0) for r in self.store.devices.values()]
        return {"messageCount": sum(counts), "devicesWithMessages": sum(1 for c in counts if c)}

    def device_side_twin(self, device_id: str) -> dict[str, Any]:
        """The twin as a device sees it (MQTT GET): desired and reported, no tags."""
        return tw.properties_view(self.record(device_id)["twin"])

    # -- query -----------------------------------------------------------------------------------------
    def query(self, text: Any, page_size: int, continuation: str | None) -> tuple[list[Any], str, str | None]:
        """One page of results: (items, x-ms-item-type, x-ms-continuation or None)."""
        try:
            parsed = q.parse(text)
        except q.QueryError as exc:
            raise bad_request(f"SQL query parse failed due to following errors: {exc}") from exc
        fingerprint = hashlib.sha256(parsed.text.encode()).hexdigest()[:16]
        after, returned = self._decode_continuation(continuation, fingerprint)
        with self.store.lock:
            records = list(self.store.devices.values())
        if parsed.is_aggregate:
            return q.aggregate(parsed, (self.twin_view(r) for r in records)), parsed.item_type, None
        limit = page_size if parsed.top is None else min(page_size, parsed.top - returned)
        items: list[Any] = []
        last_id, more = after, False
        for record in records:
            device_id = record["device"]["deviceId"]
            if after is not None and device_id <= after:
                continue
            # A view that shares the stored values (stored records are replaced, never modified, and the page is
            # serialized before anything else runs): no copy of every twin of the hub per query (the funnel's query
            # tests all of them to return the few still pending).
            twin = tw.device_twin_view(record["device"], record["twin"], copies=False)
            if not q.matches(parsed, twin):
                continue
            if len(items) >= limit:
                more = True
                break
            items.append(q.project(parsed, twin))
            last_id = device_id
        if not more or (parsed.top is not None and returned + len(items) >= parsed.top):
            return items, parsed.item_type, None
        token = json.dumps({"after": last_id, "n": returned + len(items), "q": fingerprint})
        return items, parsed.item_type, base64.urlsafe_b64encode(token.encode()).decode()

    @staticmethod
    def _decode_continuation(token: str | None, fingerprint: str) -> tuple[str | None, int]:
        if not token:
            return None, 0
        try:
            state = json.loads(base64.urlsafe_b64decode(token.encode()))
            if state["q"] != fingerprint:
                raise ValueError("token of another query")
            return str(state["after"]), int(state["n"])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise bad_request("The continuation token is invalid for this query.") from exc

    # -- statistics ------------------------------------------------------------------------------------
    def device_statistics(self) -> dict[str, int]:
        with self.store.lock:
            statuses = [r["device"]["status"] for r in self.store.devices.values()]
        enabled = statuses.count("enabled")
        return {
            "totalDeviceCount": len(statuses),
            "enabledDeviceCount": enabled,
            "disabledDeviceCount": len(statuses) - enabled,
        }

    def service_statistics(self) -> dict[str, int]:
        with self.store.lock:
            connected = sum(r["device"]["connectionState"] == "Connected" for r in self.store.devices.values())
        return {"connectedDeviceCount": connected}
