"""IoT Hub device lifecycle events as the function receives them, in either delivery schema (docs/contracts.md 2).

- Event Grid schema -> func.EventGridEvent: id, topic, subject, event_type, event_time, get_json();
- CloudEvents 1.0 -> func.CloudEvent: id, source, subject, type, time, get_json().
For DeviceCreated / DeviceDeleted, data = {hubName, deviceId, twin}; topic/source is the hub's resource id
(.../PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/{hubName}) and subject `devices/{deviceId}`. The twin snapshot in
the event is not used: it can be stale, and it does not say whether the device is an IoT Edge device.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DEVICE_CREATED = "Microsoft.Devices.DeviceCreated"
# IoT Hub device IDs: up to 128 ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '
DEVICE_ID = re.compile(r"[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}", re.ASCII)
HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{1,62}", re.ASCII)
_TOPIC_HUB = re.compile(r"/PROVIDERS/MICROSOFT\.DEVICES/IOTHUBS/([^/]+)$", re.IGNORECASE)


class MalformedEvent(ValueError):
    """The event lacks what twin setup needs (hub, device) or carries something impossible."""


@dataclass(frozen=True)
class LifecycleEvent:
    id: str
    event_type: str
    schema: str  # "eventGrid" or "cloudEvents"
    hub_name: str | None = None
    device_id: str | None = None
    event_time: str | None = None

    @property
    def is_device_created(self) -> bool:
        return self.event_type == DEVICE_CREATED


def _data(event: Any) -> dict[str, Any]:
    try:
        data = event.get_json()
    except ValueError as exc:
        raise MalformedEvent(f"data is not JSON ({exc})") from None
    if isinstance(data, str):  # CloudEvents data delivered as a JSON string
        try:
            data = json.loads(data)
        except ValueError:
            raise MalformedEvent("data is a string that is not JSON") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MalformedEvent(f"data is a {type(data).__name__}, not an object")
    return data


def from_trigger(event: Any) -> LifecycleEvent:
    """Normalise func.EventGridEvent or func.CloudEvent; MalformedEvent if a DeviceCreated lacks hub or device."""
    if hasattr(event, "event_type"):
        schema, event_type, topic, when = "eventGrid", event.event_type, event.topic, event.event_time
    else:
        schema, event_type, topic, when = "cloudEvents", getattr(event, "type", None), getattr(
            event, "source", None), getattr(event, "time", None)
    event_id = str(getattr(event, "id", "") or "")[:128]
    event_type = str(event_type or "")
    when_text = when.isoformat() if hasattr(when, "isoformat") else (str(when) if when else None)
    if event_type != DEVICE_CREATED:
        return LifecycleEvent(event_id, event_type, schema, event_time=when_text)
    data = _data(event)
    subject = str(getattr(event, "subject", "") or "")
    device_id = data.get("deviceId")
    if device_id is None and subject.startswith("devices/"):
        device_id = subject.removeprefix("devices/")
    if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
        raise MalformedEvent("no valid device ID in data.deviceId or subject")
    if subject and subject != f"devices/{device_id}":
        raise MalformedEvent("subject and data.deviceId name different devices")
    hub_name = data.get("hubName")
    if hub_name is None:
        match = _TOPIC_HUB.search(str(topic or ""))
        hub_name = match.group(1) if match else None
    if not isinstance(hub_name, str) or not HUB_NAME.fullmatch(hub_name):
        raise MalformedEvent("no valid hub name in data.hubName or topic/source")
    return LifecycleEvent(event_id, event_type, schema, hub_name, device_id, when_text)


# -- Microsoft.Storage.BlobCreated (templates container) -----------------------------------------------------------
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
_BLOB_SUBJECT = re.compile(r"^/blobServices/default/containers/([a-z0-9](?:[a-z0-9-]{1,61})[a-z0-9])/blobs/(.+)$")


@dataclass(frozen=True)
class BlobCreated:
    id: str
    container: str
    blob_name: str
    etag: str | None
    actor: str  # who wrote it, as far as the event says (data.identity when present)


def blob_created(event: Any) -> BlobCreated | None:
    """A BlobCreated event (either schema) -> container, blob name, ETag; None for other event types.

    Subject `/blobServices/default/containers/{container}/blobs/{blob}`; data carries api, clientRequestId,
    requestId, eTag, contentType, contentLength, blobType, url, sequencer (and identity in newer events)
    (docs/contracts.md 2.4)."""
    event_type = getattr(event, "event_type", None) or getattr(event, "type", None)
    if event_type != BLOB_CREATED:
        return None
    match = _BLOB_SUBJECT.match(str(getattr(event, "subject", "") or ""))
    if not match:
        raise MalformedEvent("subject is not /blobServices/default/containers/{container}/blobs/{blob}")
    data = _data(event)
    etag = data.get("eTag")
    identity = data.get("identity")
    actor = f"eventgrid:{identity}" if isinstance(identity, str) and identity else "eventgrid:blob-upload"
    return BlobCreated(str(getattr(event, "id", "") or "")[:128], match.group(1), match.group(2)[:1024],
                       etag if isinstance(etag, str) else None, actor[:255])
