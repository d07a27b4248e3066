"""The funnel's stages from what a twin shows: each transition, its time, idempotence, stuck and cleared."""

from __future__ import annotations

import datetime as dt

from funnel.stages import PENDING_QUERY, PENDING_STAGES, FunnelView, StageLimits, advance, durations
from local.iothub.query import matches, parse
from shared.iothub import Twin

T0 = dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.UTC)
HASH = "sha256:abc"


def iso(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def twin(*, configured: bool = True, applied: str | None = None, activity: float | None = None,
         funnel: dict | None = None, status: str | None = None, reason: str | None = None) -> FunnelView:
    onboarding = {"allocatedAt": iso(0), "policyVersion": "1"}
    if configured:
        onboarding.update(status="configured", configurationHash=HASH, configuredAt=iso(2))
    if status:
        onboarding.update(status=status, reason=reason)
    onboarding.update(funnel or {})
    reported = {"configuration": {"hash": applied, "desiredVersion": 3, "appliedAt": iso(3)}} if applied else {}
    doc = {"deviceId": "sensor-temp-FAC01-SN1", "etag": "e1", "tags": {"facility": "FAC01", "onboarding": onboarding},
           "properties": {"desired": {"$version": 3}, "reported": reported}}
    if activity is not None:
        doc["lastActivityTime"] = (T0 + dt.timedelta(seconds=activity)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return FunnelView.of(Twin.from_json("hub1", doc))


def stages_of(step) -> list[str]:
    return [t.stage for t in step.transitions]


def test_a_configured_twin_without_acknowledgement_is_at_configured():
    step = advance(twin(), T0 + dt.timedelta(seconds=10))
    assert step.stage == "configured"
    assert stages_of(step) == ["allocated", "created", "configured"]
    # created has no time of its own yet: configuredAt bounds it
    assert step.stages == {"allocated": iso(0), "created": iso(2), "configured": iso(2)}
    assert step.patch["stage"] == "configured" and step.patch["stuck"] is None


def test_the_reported_hash_of_what_twin_setup_wrote_is_an_acknowledgement_at_the_devices_time():
    step = advance(twin(applied=HASH, activity=3.1), T0 + dt.timedelta(seconds=10))
    assert step.stage == "acknowledged" and step.stages["acknowledged"] == iso(3)


def test_another_configuration_reported_is_no_acknowledgement():
    assert advance(twin(applied="sha256:old"), T0 + dt.timedelta(seconds=10)).stage == "configured"


def test_activity_past_the_margin_after_the_acknowledgement_is_live_at_that_time():
    step = advance(twin(applied=HASH, activity=8.5), T0 + dt.timedelta(seconds=30))
    assert step.stage == "live" and step.stages["live"] == iso(8.5)
    assert durations(step.stages) == {"allocatedToConfiguredSeconds": 2.0, "configuredToAcknowledgedSeconds": 1.0,
                                      "acknowledgedToLiveSeconds": 5.0, "powerOnToLiveSeconds": 8.0}


def test_the_acknowledgement_own_activity_is_not_telemetry():
    # the PATCH of reported properties moved lastActivityTime a moment after appliedAt
    assert advance(twin(applied=HASH, activity=3.4), T0 + dt.timedelta(seconds=600)).stage == "acknowledged"


def test_recorded_stages_are_kept_so_a_rerun_adds_no_transition_and_no_patch():
    now = T0 + dt.timedelta(seconds=30)
    first = advance(twin(applied=HASH, activity=8.5), now)
    again = advance(twin(applied=HASH, activity=20, funnel=first.patch), now + dt.timedelta(seconds=30))
    assert again.transitions == [] and again.patch is None and again.stages == first.stages


def test_a_sensor_past_its_stage_limit_is_stuck_since_it_entered_the_stage_and_cleared_when_it_progresses():
    limits = StageLimits(acknowledged_s=60)
    silent = advance(twin(applied=HASH, activity=3.2), T0 + dt.timedelta(seconds=60), limits)
    assert silent.stuck is None
    silent = advance(twin(applied=HASH, activity=3.2), T0 + dt.timedelta(seconds=120), limits)
    assert silent.stuck == {"stage": "acknowledged", "since": iso(3)} and silent.newly_stuck
    recorded = silent.patch
    still = advance(twin(applied=HASH, activity=3.2, funnel=recorded), T0 + dt.timedelta(seconds=180), limits)
    assert still.patch is None and not still.newly_stuck  # counted again, flagged once
    sends = advance(twin(applied=HASH, activity=200, funnel=recorded), T0 + dt.timedelta(seconds=210), limits)
    assert sends.stage == "live" and sends.cleared and sends.patch["stuck"] is None


def test_a_twin_setup_failure_keeps_the_sensor_at_created_and_is_stuck_there_with_its_reason():
    view = twin(configured=False, status="failed", reason="unknown_template",
                funnel={"stages": {"allocated": iso(0), "created": iso(1)}, "stage": "created"})
    step = advance(view, T0 + dt.timedelta(seconds=602), StageLimits(created_s=600))
    assert step.stage == "created" and step.stuck == {"stage": "created", "since": iso(1)}
    assert step.reason == "unknown_template"


def test_a_device_clock_ahead_or_behind_is_kept_between_configured_and_now():
    view = twin(applied=HASH)
    early = FunnelView(**{**view.__dict__, "configuration": {"hash": HASH, "appliedAt": iso(-100)}})
    assert advance(early, T0 + dt.timedelta(seconds=10)).stages["acknowledged"] == iso(2)
    late = FunnelView(**{**view.__dict__, "configuration": {"hash": HASH, "appliedAt": iso(9999)}})
    assert advance(late, T0 + dt.timedelta(seconds=10)).stages["acknowledged"] == iso(10)


def test_the_pending_query_selects_sensors_not_yet_live_and_never_live_ones():
    query = parse(PENDING_QUERY)
    assert "'" + "', '".join(PENDING_STAGES) + "'" in PENDING_QUERY

    def doc(onboarding: dict) -> dict:
        return {"deviceId": "d", "tags": {"onboarding": onboarding}}

    assert matches(query, doc({"allocatedAt": iso(0)}))  # no stage yet
    assert matches(query, doc({"allocatedAt": iso(0), "stage": "acknowledged"}))
    assert not matches(query, doc({"allocatedAt": iso(0), "stage": "live"}))
    assert not matches(query, doc({}))  # not placed by the webhook: not ours


def test_the_margin_counts_from_the_end_of_the_acknowledgements_whole_second():
    # appliedAt 12:00:03 (whole seconds) may stand for 12:00:03.9: activity at 12:00:03.95 is still the ack itself
    assert advance(twin(applied=HASH, activity=3.95), T0 + dt.timedelta(seconds=9),
                   StageLimits(live_margin_s=0.5)).stage == "acknowledged"
    assert advance(twin(applied=HASH, activity=4.6), T0 + dt.timedelta(seconds=9),
                   StageLimits(live_margin_s=0.5)).stage == "live"


def test_stage_rows_are_written_in_a_few_statements_and_each_once(tmp_path):
    """A rollout reaches tens of thousands of stages: the audit writes them per chunk, not per row, and a stage
    already recorded (a re-run, a concurrent run) is neither written again nor reported as added."""
    import datetime as dt

    from local.seed.seed import SCHEMA, schema_statements
    from shared.audit import STAGE_CHUNK, AuditWriter, StageRow
    from shared.sql import Database

    db = Database(f"Driver=SQLite3;Database={tmp_path / 'stages.db'}")
    for statement in schema_statements(SCHEMA.read_text()):
        db.execute(statement)
    statements = []
    execute = db.execute

    def counting(sql, params=()):
        statements.append(sql.split()[0])
        return execute(sql, params)

    db.execute = counting
    writer = AuditWriter(db)
    at = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    rows = [StageRow(f"sensor-temp-FAC01-S{n}", stage, at, "hub", "FAC01")
            for n in range(STAGE_CHUNK + 10) for stage in ("allocated", "created")]
    assert writer.onboarding_stage("sensor-temp-FAC01-S0", "allocated", at) is True
    statements.clear()
    added = writer.onboarding_stages([*rows, rows[5]])  # one row twice: written once
    assert added == {(r.device_id, r.stage) for r in rows} - {("sensor-temp-FAC01-S0", "allocated")}
    assert statements == ["INSERT"] * 3  # 2 x 150 rows less the one present, in chunks of STAGE_CHUNK
    assert db.fetch_one("SELECT COUNT(*) AS n FROM onboarding_stages")["n"] == len(rows)
    assert writer.onboarding_stages(rows) == set()
    db.close()
