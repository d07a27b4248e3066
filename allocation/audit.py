"""The allocation's audit trail (provisioning_events, through the one audit writer) and security alerts (the
security-alerts queue).

Both are best effort with respect to the decision: a failed write is logged loudly but never turns a refusal
into an allocation or an allocation into a fault.
"""

from __future__ import annotations

import json
import logging

from shared.audit import AuditWriter
from shared.sql import Database

log = logging.getLogger(__name__)


class AuditTrail:
    def __init__(self, database: Database, queue_client_factory=None):
        self._writer = AuditWriter(database)
        self._queue_client_factory = queue_client_factory

    def record(self, registration_id: str, outcome: str, reason_code: str | None, hub: str | None,
               details: dict) -> bool:
        """One provisioning_events row; False (and an error log) when it could not be written."""
        return self._writer.provisioning(registration_id, outcome, reason_code, hub, details)

    def security_alert(self, alert: dict) -> bool:
        if self._queue_client_factory is None:
            return False
        try:
            self._queue_client_factory().send_message(json.dumps(alert, default=str, sort_keys=True))
        except Exception as exc:  # noqa: BLE001 - the refusal stands even if the alert cannot be queued
            log.error("security alert not queued: %s", type(exc).__name__)
            return False
        return True
