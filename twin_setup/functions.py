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


# -- configuration changes (twin_setup/changes.py) ------------------------------------------------------------
ROLLOUT_QUEUE = "config-rollouts"  # ROLLOUT_QUEUE's default; the trigger binds the name


@bp.function_name("on_template_changed")
@bp.event_grid_trigger(arg_name="event")
def on_template_changed(event: func.EventGridEvent) -> None:
    """Microsoft.Storage.BlobCreated on the templates container: validate the template and start its rollout.
    Returning acknowledges; a transient failure raises and Event Grid redelivers (the rollout record's unique
    source + ETag makes a redelivery start nothing twice)."""
    from twin_setup.events import blob_created

    try:
        created = blob_created(event)
    except MalformedEvent as exc:
        log.error("event %s is not a usable BlobCreated event: %s", str(getattr(event, "id", ""))[:128], exc)
        return
    if created is None:
        return
    from twin_setup.wiring import changes

    service = changes()
    if created.container != service.setup.settings.templates_container:
        log.info("BlobCreated in container %s, not the templates': ignored", created.container)
        return
    rollout = service.start_from_blob(created.blob_name, created.etag, created.actor)
    telemetry.emit("config_change", kind="template", blob=created.blob_name[:100],
                   rolloutId=rollout.rollout_id if rollout else None, state=rollout.state if rollout else "ignored",
                   reasonCode=rollout.reason if rollout else None)


@bp.function_name("advance_config_rollout")
@bp.queue_trigger(arg_name="msg", queue_name=ROLLOUT_QUEUE, connection="AzureWebJobsStorage")
def advance_config_rollout(msg: func.QueueMessage) -> None:
    """One step of a rollout (a wave's writes, the canary's check); queues the next step with its delay."""
    import json

    try:
        rollout_id = str(json.loads(msg.get_body().decode("utf-8"))["rolloutId"])[:36]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        log.error("config-rollouts message is not {\"rolloutId\": ...}: dropped")
        return
    from twin_setup.wiring import changes

    service = changes()
    delay = service.advance(rollout_id)
    if delay is not None:
        service.schedule(rollout_id, delay)


@bp.function_name("check_config_changes")
@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *")
def check_config_changes(timer: func.TimerRequest) -> None:
    """Every minute: override rows changed since the last seen start rollouts; stalled rollouts are queued again."""
    from twin_setup.wiring import changes

    started = changes().check()
    if started:
        log.info("override changes started %d rollouts", len(started))
