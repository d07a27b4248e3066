"""The audit trail (provisioning_events in SQL) and security alerts (the security-alerts queue).

Both are best effort with respect to the decision: a failed audit write is logged loudly but never turns a
refusal into an allocation or an allocation into a fault.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

from shared.sql import Database

log = logging.getLogger(__name__)
MAX_DETAILS = 4000


class AuditTrail:
    def __init__(self, database: Database, queue_client_factory=None):
        self._db = database
        self._queue_client_factory = queue_client_factory

    def record(self, registration_id: str, outcome: str, reason_code: str | None, hub: str | None,
               details: dict) -> bool:
        """Insert one provisioning_events row; False (and an error log) when it could not be written."""
        text = json.dumps(details, default=str, sort_keys=True)[:MAX_DETAILS]
        try:
            self._db.execute(
                "INSERT INTO provisioning_events (event_id, at, registration_id, outcome, reason_code, hub, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [str(uuid.uuid4()), dt.datetime.now(dt.UTC).replace(tzinfo=None), registration_id[:128], outcome,
                 reason_code, hub, text],
            )
        except Exception as exc:  # noqa: BLE001 - audit must not change the decision
            log.error("audit write failed for %s (%s): %s", registration_id[:128], outcome, type(exc).__name__)
            return False
        return True

    def security_alert(self, alert: dict) -> bool:
        if self._queue_client_factory is None:
            return False
        try:
            self._queue_client_factory().send_message(json.dumps(alert, default=str, sort_keys=True))
        except Exception as exc:  # noqa: BLE001 - the refusal stands even if the alert cannot be queued
            log.error("security alert not queued: %s", type(exc).__name__)
            return False
        return True
