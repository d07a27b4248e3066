"""on_device_created: the Event Grid trigger for IoT Hub's Microsoft.Devices.DeviceCreated. Thin.

Both delivery schemas reach it (func.EventGridEvent, func.CloudEvent); other event types are acknowledged and
ignored. Returning acknowledges the event; raising fails the invocation, and Event Grid redelivers it.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import telemetry
from twin_setup.events import MalformedEvent, from_trigger

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("on_device_created")
@bp.event_grid_trigger(arg_name="event")
def on_device_created(event: func.EventGridEvent) -> None:
    try:
        parsed = from_trigger(event)
    except MalformedEvent as exc:
        # Redelivering a malformed event cannot help: acknowledge it, loudly.
        event_id = str(getattr(event, "id", ""))[:128]
        log.error("event %s is not a usable DeviceCreated event: %s", event_id, exc)
        telemetry.emit("twin_setup", outcome="malformed", reasonCode="invalid_request", eventId=event_id,
                       error=str(exc))
        return
    # Imported on first event, not when the host indexes function_app on every cold start.
    from twin_setup.wiring import twin_setup

    twin_setup().handle(parsed)
