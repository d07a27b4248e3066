"""Digest delivery: the queue always, e-mail through Azure Communication Services only when configured."""

import datetime as dt
import json
import sys
from types import SimpleNamespace

from cert_lifecycle.alerts import AlertSender, Digest, EmailSender, email_content, format_alerts, list_alerts
from cert_lifecycle.settings import LifecycleSettings

NOW = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)
MESSAGE = {"type": "certificateExpiryDigest", "id": "2026-11-23:FAC03:critical", "date": "2026-11-23",
           "facility": "FAC03", "facilityName": "Reno Machining", "level": "critical", "escalated": True,
           "to": ["manager.fac03@example.com"], "cc": ["security@example.com"], "count": 1, "omitted": 0,
           "devices": [{"deviceId": "sensor-temp-FAC03-SN1", "hub": "h", "serialNumber": "AB",
                        "notAfter": "2026-12-10T00:00:00Z", "daysLeft": 17.0, "renewalState": "requested"}]}
DIGEST = Digest("FAC03", "critical", "2026-11-23", ("manager.fac03@example.com",), ("security@example.com",), MESSAGE)


class Queues:
    def __init__(self, fail=False):
        self.sent, self.fail = [], fail

    def send(self, queue, message):
        if self.fail:
            raise ConnectionError("down")
        self.sent.append((queue, message))


class Mail:
    def __init__(self, fail=False):
        self.messages, self.fail = [], fail

    def begin_send(self, message):
        if self.fail:
            raise RuntimeError("ACS said no")
        self.messages.append(message)


def test_without_acs_the_digest_goes_to_the_queue_and_the_sdk_is_never_imported():
    sys.modules.pop("azure.communication.email", None)
    queues = Queues()
    assert AlertSender(queues, LifecycleSettings(), EmailSender(LifecycleSettings(), lambda: None)).send(DIGEST)
    assert queues.sent == [("certificate-alerts", MESSAGE)]
    assert "azure.communication.email" not in sys.modules


def test_with_acs_the_digest_is_also_mailed_and_a_mail_failure_keeps_the_queue_copy():
    settings = LifecycleSettings(alert_sender="DoNotReply@alerts.example.com",
                                 acs_endpoint="https://acs.communication.azure.com")
    email = EmailSender(settings, lambda: None)
    email._client = Mail()
    queues = Queues()
    assert AlertSender(queues, settings, email).send(DIGEST)
    [message] = email._client.messages
    assert message["senderAddress"] == "DoNotReply@alerts.example.com"
    assert message["recipients"] == {"to": [{"address": "manager.fac03@example.com"}],
                                     "cc": [{"address": "security@example.com"}]}
    assert message["content"]["subject"].startswith("[CRITICAL] 1 ")
    assert "sensor-temp-FAC03-SN1: 17.0 days left" in message["content"]["plainText"]
    email._client = Mail(fail=True)
    assert AlertSender(queues, settings, email).send(DIGEST) and len(queues.sent) == 2
    assert not AlertSender(Queues(fail=True), settings, email).send(DIGEST)


def test_the_cli_lists_peeked_digests_readably():
    client = SimpleNamespace(peek_messages=lambda max_messages: [SimpleNamespace(content=json.dumps(MESSAGE).encode())])
    found = list_alerts(client)
    assert found == [MESSAGE]
    text = format_alerts(found)
    assert "critical" in text and "FAC03" in text and "cc security@example.com" in text
    assert format_alerts([]) == "no certificate alerts"
    assert email_content(DIGEST)["plainText"].count("\n- ") == 1
