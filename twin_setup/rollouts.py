"""The rollout record in SQL (config_rollouts, config_rollout_devices; migration 0006). Parameterised statements only.

A rollout row says what changed (source and its ETag or updated_at, template version and the one it replaces), who
changed it, its state and its waves; a device row per affected sensor says its wave and what happened to it. A
lease (lease_until) lets one worker at a time advance a rollout: the queue may deliver its message twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from shared import times
from shared.sql import Database

COLUMNS = ("rollout_id, kind, template, facility_code, source, source_etag, template_version, previous_version, "
           "changed_by, state, reason, detail, affected, wave_count, current_wave, wave_started_at, created_at, "
           "updated_at")


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

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Rollout:
        return cls(row["rollout_id"], row["kind"], row["template"], row["facility_code"], row["source"],
                   row["source_etag"], row["template_version"], row["previous_version"], row["changed_by"],
                   row["state"], row["reason"], row["detail"], int(row["affected"] or 0), int(row["wave_count"] or 0),
                   int(row["current_wave"] or 0), times.parse_utc(row["wave_started_at"]),
                   times.parse_utc(row["created_at"]), times.parse_utc(row["updated_at"]))

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

    def open_rollouts(self) -> list[Rollout]:
        rows = self._db.fetch_all(f"SELECT {COLUMNS} FROM config_rollouts WHERE state = 'running'", [])  # noqa: S608
        return [Rollout.from_row(r) for r in rows]

    def latest_source_etag(self, kind: str, source: str) -> str | None:
        row = self._db.fetch_one("SELECT MAX(source_etag) AS latest FROM config_rollouts WHERE kind = ? AND source = ?",
                                 [kind, source])
        return row["latest"] if row else None

    def devices(self, rollout_id: str, wave: int | None = None) -> list[DeviceRow]:
        sql = ("SELECT device_id, hub, facility_code, wave, state, reason, previous_hash, configuration_hash, "
               "ack_capable FROM config_rollout_devices WHERE rollout_id = ?")
        params: list[Any] = [rollout_id]
        if wave is not None:
            sql += " AND wave = ?"
            params.append(wave)
        rows = self._db.fetch_all(sql + " ORDER BY wave, device_id", params)
        return [DeviceRow(r["device_id"], r["hub"], r["facility_code"], int(r["wave"]), r["state"], r["reason"],
                          r["previous_hash"], r["configuration_hash"], bool(r["ack_capable"])) for r in rows]

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
