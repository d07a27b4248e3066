"""The rollout record in SQL (config_rollouts, config_rollout_devices; migrations 0006 and 0008). Parameterised
statements only.

A rollout row says what changed (source and its ETag or updated_at, template version and the one it replaces), who
changed it, its state and its waves; a device row per affected sensor says its wave and what happened to it. A
lease (lease_until) lets one worker at a time advance a rollout: the queue may deliver its message twice.
swept_at says when the final sweep (late joiners) ran. config_override_keys holds the (facility, sensor type) keys
of facility_overrides as the periodic check last saw them, so that a deleted row is noticed (OverrideKeys).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from shared import times
from shared.sql import Database

COLUMNS = ("rollout_id, kind, template, facility_code, source, source_etag, template_version, previous_version, "
           "changed_by, state, reason, detail, affected, wave_count, current_wave, wave_started_at, created_at, "
           "updated_at, swept_at")


@dataclass(frozen=True)
class Rollout:
    rollout_id: str
    kind: str  # template | overrides | rollback
    template: str | None
    facility: str | None
    source: str
    source_etag: str
    template_version: str | None
    previous_version: str | None
    changed_by: str
    state: str
    reason: str | None
    detail: str | None
    affected: int
    wave_count: int
    current_wave: int
    wave_started_at: dt.datetime | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    swept_at: dt.datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Rollout:
        return cls(row["rollout_id"], row["kind"], row["template"], row["facility_code"], row["source"],
                   row["source_etag"], row["template_version"], row["previous_version"], row["changed_by"],
                   row["state"], row["reason"], row["detail"], int(row["affected"] or 0), int(row["wave_count"] or 0),
                   int(row["current_wave"] or 0), times.parse_utc(row["wave_started_at"]),
                   times.parse_utc(row["created_at"]), times.parse_utc(row["updated_at"]),
                   times.parse_utc(row.get("swept_at")))

    def as_dict(self) -> dict[str, Any]:
        return {"rolloutId": self.rollout_id, "kind": self.kind, "template": self.template,
                "facility": self.facility, "source": self.source, "sourceEtag": self.source_etag,
                "templateVersion": self.template_version, "previousVersion": self.previous_version,
                "changedBy": self.changed_by, "state": self.state, "reason": self.reason, "detail": self.detail,
                "affected": self.affected, "waveCount": self.wave_count, "currentWave": self.current_wave,
                "createdAt": times.iso_utc(self.created_at) if self.created_at else None,
                "updatedAt": times.iso_utc(self.updated_at) if self.updated_at else None}


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    hub: str
    facility: str
    wave: int
    state: str
    reason: str | None
    previous_hash: str | None
    configuration_hash: str | None
    ack_capable: bool
    updated_at: dt.datetime | None = None  # a written sensor's write time (the acknowledgement wait counts from it)


def _now() -> dt.datetime:
    return times.sql_utc(times.utc_now(), whole_seconds=False)


class RolloutStore:
    def __init__(self, database: Database):
        self._db = database

    def exists(self, source: str, source_etag: str) -> bool:
        return self._db.fetch_one("SELECT rollout_id FROM config_rollouts WHERE source = ? AND source_etag = ?",
                                  [source, source_etag]) is not None

    def create(self, rollout_id: str, kind: str, template: str | None, facility: str | None, source: str,
               source_etag: str, template_version: str | None, previous_version: str | None, changed_by: str,
               state: str, reason: str | None = None, detail: str | None = None) -> bool:
        """Insert the rollout; False when one for this source and ETag exists already (a redelivery)."""
        now = _now()
        try:
            self._db.execute(
                "INSERT INTO config_rollouts (rollout_id, kind, template, facility_code, source, source_etag, "
                "template_version, previous_version, changed_by, state, reason, detail, affected, wave_count, "
                "current_wave, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?)",
                [rollout_id, kind, template, facility, source[:255], source_etag[:64], template_version,
                 previous_version, changed_by[:255], state, reason, (detail or None) and detail[:1000], now, now])
        except Exception:  # the unique index refused a second rollout for this source and ETag
            if self.exists(source[:255], source_etag[:64]):
                return False
            raise
        return True

    def add_devices(self, rollout_id: str, waves: list[list[tuple[str, str, str, str | None, bool]]]) -> None:
        """waves: per wave, (device ID, hub, facility, previous hash, ack capable)."""
        now = _now()
        for number, wave in enumerate(waves):
            for device_id, hub, facility, previous, capable in wave:
                self._db.execute(
                    "INSERT INTO config_rollout_devices (rollout_id, device_id, hub, facility_code, wave, state, "
                    "previous_hash, ack_capable, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                    [rollout_id, device_id, hub, facility, number, previous, 1 if capable else 0, now])
        self._db.execute("UPDATE config_rollouts SET affected = ?, wave_count = ?, updated_at = ? WHERE rollout_id = ?",
                         [sum(len(w) for w in waves), len(waves), now, rollout_id])

    def get(self, rollout_id: str) -> Rollout | None:
        row = self._db.fetch_one(f"SELECT {COLUMNS} FROM config_rollouts WHERE rollout_id = ?",  # noqa: S608 - fixed columns
                                 [rollout_id])
        return Rollout.from_row(row) if row else None

    def recent(self, limit: int = 20) -> list[Rollout]:
        rows = self._db.fetch_all(f"SELECT {COLUMNS} FROM config_rollouts ORDER BY created_at DESC", [])  # noqa: S608
        return [Rollout.from_row(r) for r in rows[:limit]]

    def open_rollouts(self, states: tuple[str, ...] = ("running",)) -> list[Rollout]:
        """Rollouts in one of `states` (running: the periodic check re-queues stalled ones; running and halted: the
        drift check leaves their sensors alone)."""
        marks = ", ".join("?" for _ in states)
        rows = self._db.fetch_all(f"SELECT {COLUMNS} FROM config_rollouts WHERE state IN ({marks})",  # noqa: S608
                                  list(states))
        return [Rollout.from_row(r) for r in rows]

    def append_wave(self, rollout_id: str, wave: int, rows: list[tuple[str, str, str, str | None, bool]]) -> None:
        """The sweep's late joiners as wave `wave` (the rollout's wave_count so far)."""
        now = _now()
        for device_id, hub, facility, previous, capable in rows:
            self._db.execute(
                "INSERT INTO config_rollout_devices (rollout_id, device_id, hub, facility_code, wave, state, "
                "previous_hash, ack_capable, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                [rollout_id, device_id, hub, facility, wave, previous, 1 if capable else 0, now])
        self._db.execute("UPDATE config_rollouts SET affected = affected + ?, wave_count = ?, updated_at = ? "
                         "WHERE rollout_id = ?", [len(rows), wave + 1, now, rollout_id])

    def requeue(self, rollout_id: str, wave: int, device_ids: list[str]) -> None:
        """Sensors already in the rollout whose twin no longer has its configuration (a DeviceCreated write from a
        stale template cache landed after the rollout's) are written again in wave `wave` (append_wave counts it)."""
        now = _now()
        for device_id in device_ids:
            self._db.execute("UPDATE config_rollout_devices SET wave = ?, state = 'pending', reason = NULL, "
                             "updated_at = ? WHERE rollout_id = ? AND device_id = ?",
                             [wave, now, rollout_id, device_id])

    def override_keys(self) -> OverrideKeys:
        return OverrideKeys(self._db)

    def mark_swept(self, rollout_id: str) -> None:
        self._db.execute("UPDATE config_rollouts SET swept_at = ?, updated_at = ? WHERE rollout_id = ?",
                         [_now(), _now(), rollout_id])

    def latest_source_etag(self, kind: str, source: str) -> str | None:
        row = self._db.fetch_one("SELECT MAX(source_etag) AS latest FROM config_rollouts WHERE kind = ? AND source = ?",
                                 [kind, source])
        return row["latest"] if row else None

    def devices(self, rollout_id: str, wave: int | None = None) -> list[DeviceRow]:
        sql = ("SELECT device_id, hub, facility_code, wave, state, reason, previous_hash, configuration_hash, "
               "ack_capable, updated_at FROM config_rollout_devices WHERE rollout_id = ?")
        params: list[Any] = [rollout_id]
        if wave is not None:
            sql += " AND wave = ?"
            params.append(wave)
        rows = self._db.fetch_all(sql + " ORDER BY wave, device_id", params)
        return [DeviceRow(r["device_id"], r["hub"], r["facility_code"], int(r["wave"]), r["state"], r["reason"],
                          r["previous_hash"], r["configuration_hash"], bool(r["ack_capable"]),
                          times.parse_utc(r["updated_at"])) for r in rows]

    def wave_counts(self, rollout_id: str) -> dict[int, dict[str, int]]:
        rows = self._db.fetch_all("SELECT wave, state, COUNT(*) AS n FROM config_rollout_devices WHERE rollout_id = ? "
                                  "GROUP BY wave, state", [rollout_id])
        counts: dict[int, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(int(row["wave"]), {})[row["state"]] = int(row["n"])
        return counts

    def set_device(self, rollout_id: str, device_id: str, state: str, reason: str | None = None,
                   configuration_hash: str | None = None) -> None:
        self._db.execute(
            "UPDATE config_rollout_devices SET state = ?, reason = ?, configuration_hash = COALESCE(?, "
            "configuration_hash), updated_at = ? WHERE rollout_id = ? AND device_id = ?",
            [state, reason, configuration_hash, _now(), rollout_id, device_id])

    def set_state(self, rollout_id: str, state: str, reason: str | None = None, detail: str | None = None,
                  expected: tuple[str, ...] | None = None) -> bool:
        """Change the state (only from one of `expected` when given; detail None keeps the one recorded); False when
        the row was not in one."""
        sql = ("UPDATE config_rollouts SET state = ?, reason = ?, detail = COALESCE(?, detail), updated_at = ? "
               "WHERE rollout_id = ?")
        params: list[Any] = [state, reason, (detail or None) and detail[:1000], _now(), rollout_id]
        if expected:
            sql += f" AND state IN ({', '.join('?' for _ in expected)})"
            params.extend(expected)
        return self._db.execute(sql, params) > 0

    def start_wave(self, rollout_id: str, wave: int) -> None:
        self._db.execute("UPDATE config_rollouts SET current_wave = ?, wave_started_at = ?, updated_at = ? "
                         "WHERE rollout_id = ?", [wave, _now(), _now(), rollout_id])

    def claim(self, rollout_id: str, seconds: float) -> bool:
        """Take the rollout's lease for `seconds` unless another worker holds it."""
        now = _now()
        return self._db.execute(
            "UPDATE config_rollouts SET lease_until = ? WHERE rollout_id = ? "
            "AND (lease_until IS NULL OR lease_until < ?)",
            [now + dt.timedelta(seconds=seconds), rollout_id, now]) > 0

    def release(self, rollout_id: str) -> None:
        """Give the lease back; updated_at says when the rollout was last advanced (the periodic check re-queues
        a running rollout nobody advanced for a while)."""
        self._db.execute("UPDATE config_rollouts SET lease_until = NULL, updated_at = ? WHERE rollout_id = ?",
                         [_now(), rollout_id])


class OverrideKeys:
    """The (facility, sensor type) keys of facility_overrides as the periodic check last saw them, with the
    updated_at stamp then (config_override_keys, migration 0008). Chosen over a tombstone (a trigger or a soft
    delete): whoever deletes a row (the CLI, an operator in SQL, a script), the next check sees the key gone; the
    writers of facility_overrides stay as they are."""

    def __init__(self, database: Database):
        self._db = database

    def seen(self) -> dict[tuple[str, str], str]:
        rows = self._db.fetch_all("SELECT facility_code, sensor_type, stamp FROM config_override_keys", [])
        return {(r["facility_code"], r["sensor_type"]): r["stamp"] for r in rows}

    def record(self, current: dict[tuple[str, str], str], seen: dict[tuple[str, str], str]) -> None:
        """Make the recorded set `current`: keys gone are removed (after their rollouts started), new or changed
        ones written."""
        now = _now()
        for facility, sensor_type in seen.keys() - current.keys():
            self._db.execute("DELETE FROM config_override_keys WHERE facility_code = ? AND sensor_type = ?",
                             [facility, sensor_type])
        for (facility, sensor_type), stamp in current.items():
            if (facility, sensor_type) not in seen:
                try:
                    self._db.execute("INSERT INTO config_override_keys (facility_code, sensor_type, stamp, seen_at) "
                                     "VALUES (?, ?, ?, ?)", [facility, sensor_type, stamp[:32], now])
                except Exception:  # noqa: BLE001, S112 - a concurrent check recorded it first: the key is known
                    continue
            elif seen[(facility, sensor_type)] != stamp:
                self._db.execute("UPDATE config_override_keys SET stamp = ?, seen_at = ? WHERE facility_code = ? "
                                 "AND sensor_type = ?", [stamp[:32], now, facility, sensor_type])
