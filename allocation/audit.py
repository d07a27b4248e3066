"""The allocation's audit trail (provisioning_events, through the one audit writer) and security alerts (the
security-alerts queue).

Both are best effort with respect to the decision: a failed write is logged loudly but never turns a refusal
into an allocation or an allocation into a fault.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from shared.audit import AuditWriter
from shared.certificates import CertificateRegister
from shared.sql import Database

log = logging.getLogger(__name__)


class AuditTrail:
    def __init__(self, database: Database, queue_client_factory=None):
        self._writer = AuditWriter(database)
        self._register = CertificateRegister(database)
        self._queue_client_factory = queue_client_factory

    def record(self, registration_id: str, outcome: str, reason_code: str | None, hub: str | None,
               details: dict) -> bool:
        """One provisioning_events row; False (and an error log) when it could not be written."""
        return self._writer.provisioning(registration_id, outcome, reason_code, hub, details)

    def allocated(self, registration_id: str, hub: str, details: dict,
                  certificate: tuple[str, str] | None, at: dt.datetime) -> bool:
        """The allocation's audit row and, when DPS presented the certificate (issuer DN, serial hex), the moment
        DPS provisioned the device with it on the certificate register: what completes a renewal (the device has
        re-provisioned with its new certificate, docs/contracts.md 7). A certificate not issued to this device by
        this product changes nothing there. True when everything was written."""
        written = self.record(registration_id, "allocated", None, hub, details)
        if certificate is not None:
            try:
                self._register.mark_provisioned(certificate[0], certificate[1], registration_id, at)
            except Exception as exc:  # noqa: BLE001 - the allocation stands; the renewal waits and is reported
                log.error("first use of %s's certificate %s not recorded: %s", registration_id, certificate[1],
                          type(exc).__name__)
                return False
        return written

    def security_alert(self, alert: dict) -> bool:
        if self._queue_client_factory is None:
            return False
        try:
            self._queue_client_factory().send_message(json.dumps(alert, default=str, sort_keys=True))
        except Exception as exc:  # noqa: BLE001 - the refusal stands even if the alert cannot be queued
            log.error("security alert not queued: %s", type(exc).__name__)
            return False
        return True
