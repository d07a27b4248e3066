"""on_device_created: the Event Grid trigger for IoT Hub's Microsoft.Devices.DeviceCreated. Thin.

Both delivery schemas reach it (func.EventGridEvent, func.CloudEvent); other event types are acknowledged and
ignored. Returning acknowledges the event; raising fails the invocation, and Event Grid redelivers it.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import telemetry
from shared.retry import Deadlines
from twin_setup.events import MalformedEvent, from_trigger

log = logging.getLogger(__name__)
bp = func.Blueprint()
# Event Grid waits 30 s for an answer, then counts the delivery failed and retries it (docs/contracts.md 2): the
# handler answers by then whatever Blob, SQL or a hub do (issue 16: a hung template read took 41 s, the Storage
# client's 20 s read timeout and its one retry). What is not done in time goes on in the background; the
# redelivery finds it done (the configuration hash in the tags) or does it (per-device lock, conditional writes).
EVENT_DEADLINE_S = 25
DEADLINES = Deadlines("twin-setup", workers=16)  # its pool is made on the first event


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

    # DeadlineExceeded is a TransientError: raised, it fails the invocation and Event Grid redelivers.
    DEADLINES.run(lambda: twin_setup().handle(parsed), EVENT_DEADLINE_S, f"twin setup of {parsed.device_id}")


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


@bp.function_name("check_config_drift")
@bp.timer_trigger(arg_name="timer", schedule="0 17 * * * *", run_on_startup=False, use_monitor=True)
def check_config_drift(timer: func.TimerRequest) -> None:
    """Hourly, at minute 17 (twin_setup/drift.py SCHEDULE): installed sensors whose twin differs from template (+)
    overrides today are re-applied through twin setup's writer (DRIFT_ACTION=reapply) or reported; the counts go
    to telemetry (config_drift, the workbook's drift panel). A run that reached no hub fails (the next one runs
    on schedule)."""
    from shared.bootstrap import services
    from shared.retry import RunBudget
    from twin_setup.drift import build_drift
    from twin_setup.wiring import twin_setup

    check = build_drift(services(), twin_setup())
    # Within its run budget (shared/retry.py RUN_BUDGETS_S): hubs and writes it does not reach are the next run's.
    budget = RunBudget.for_trigger("check_config_drift", reserve_s=2 * check.setup.settings.hub_timeout_s)
    report = check.run(budget=budget)
    log.info("drift: %d scanned, %d drifted, %d re-applied, %d held by rollouts", report.scanned, report.drifted,
             report.repaired, report.held)
    if check.hosts and len(report.incomplete_hubs) == len(check.hosts):
        raise RuntimeError("drift check reached no hub: " + ", ".join(report.incomplete_hubs))


@bp.function_name("refresh_configuration_links")
@bp.timer_trigger(arg_name="timer", schedule="0 7 * * * *")
def refresh_configuration_links(timer: func.TimerRequest) -> None:
    """Hourly, at minute 7: renew the read-only links of offloaded configurations that expire soon
    (twin_setup/offload.py); the configuration hash stays, so sensors do not apply again."""
    from twin_setup.wiring import link_refresher

    report = link_refresher().run()
    log.info("configuration links: %d renewed of %d found, %d conflicts", report.refreshed, report.found,
             report.conflicts)
