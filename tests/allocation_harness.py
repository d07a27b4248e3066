"""An allocation webhook wired to real SQL (SQLite ODBC), real CRL verification and fake Azure clients."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import azure.functions as func
from cryptography.hazmat.primitives import serialization

from allocation import service as handler
from allocation.audit import AuditTrail
from allocation.capacity import CapacityMonitor
from allocation.decision import AllocationContext
from allocation.issued import issued_certificate
from allocation.trust import TrustStore
from local.seed.seed import SCHEMA, schema_statements
from shared.config import Settings
from shared.facilities import FacilityDirectory
from shared.sql import Database
from tests.pki_helpers import NOW, TestCa, make_ca

HUBS = {"hub-west.azure-devices.net": "west", "hub-west2.azure-devices.net": "west",
        "hub-central.azure-devices.net": "central", "hub-east.azure-devices.net": "east"}


class FakeCertificates:
    def __init__(self, cas: dict[str, TestCa]):
        self.cas = cas

    def get_certificate(self, name):
        from azure.core.exceptions import ResourceNotFoundError

        if name not in self.cas:
            raise ResourceNotFoundError(f"certificate {name} not found")
        return SimpleNamespace(cer=self.cas[name].certificate.public_bytes(serialization.Encoding.DER))


class FakeSecrets:
    def __init__(self):
        self.values: dict[str, str] = {}

    def get_secret(self, name):
        from azure.core.exceptions import ResourceNotFoundError

        if name not in self.values:
            raise ResourceNotFoundError(f"secret {name} not found")
        return SimpleNamespace(value=self.values[name])


class FakeQueue:
    def __init__(self):
        self.messages: list[dict] = []

    def send_message(self, text):
        self.messages.append(json.loads(text))


@dataclass
class Webhook:
    db: Database
    ca: TestCa
    secrets: FakeSecrets
    device_counts: dict[str, int]
    alerts: FakeQueue
    context: AllocationContext
    calls: list = field(default_factory=list)

    def publish_crl(self, revoked=(), **kwargs) -> None:
        self.secrets.values[f"crl-{self.ca.name}"] = base64.b64encode(self.ca.crl(list(revoked), **kwargs)).decode()
        self.context.trust._crls.invalidate()

    def post(self, body) -> tuple[int, dict]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = func.HttpRequest("POST", "http://localhost/api/allocate", body=raw, headers={})
        resp = handler.allocate(req)
        return resp.status_code, json.loads(resp.get_body() or b"null")

    def audit_rows(self) -> list[dict]:
        return self.db.fetch_all("SELECT registration_id, outcome, reason_code, hub, details FROM provisioning_events")


def build_webhook(tmp_path: Path, monkeypatch, max_devices: int = 100) -> Webhook:
    db = Database(f"Driver=SQLite3;Database={tmp_path / 'alloc.db'}")
    for statement in schema_statements(SCHEMA.read_text()):
        db.execute(statement)
    for host, region in HUBS.items():
        db.execute("INSERT INTO iot_hubs (host_name, region, max_devices, max_daily_messages, accepting) "
                   "VALUES (?, ?, ?, ?, 1)", [host, region, max_devices, 400000])
    for code, region, hub, active in [("FAC03", "west", "hub-west.azure-devices.net", 1),
                                      ("FAC06", "central", "hub-central.azure-devices.net", 1),
                                      ("FAC99", "east", "hub-east.azure-devices.net", 0)]:
        db.execute("INSERT INTO facilities (facility_code, name, region, preferred_hub, manager_email, active) "
                   "VALUES (?, ?, ?, ?, ?, ?)", [code, f"Plant {code}", region, hub, "m@example.com", active])
    ca = make_ca("intermediate-ca-west", "west")
    settings = Settings({"REGIONAL_CAS": f"west={ca.name}", "CRL_CACHE_TTL_SECONDS": "300"})
    secrets = FakeSecrets()
    counts = dict.fromkeys(HUBS, 0)
    context = AllocationContext(
        trust=TrustStore(settings, FakeCertificates({ca.name: ca}), secrets, now=lambda: NOW),
        facilities=FacilityDirectory(db, 60),
        capacity=CapacityMonitor(db, lambda host: counts[host], list(HUBS), ttl_s=0, quiet_s=0),
        issued_certificate=lambda device_id: issued_certificate(db, device_id),
        utilisation_threshold=0.9,
    )
    alerts = FakeQueue()
    monkeypatch.setattr(handler, "allocation_context", lambda: context)
    monkeypatch.setattr(handler, "audit_trail", lambda: AuditTrail(db, lambda: alerts))
    hook = Webhook(db, ca, secrets, counts, alerts, context)
    hook.publish_crl()
    return hook


def fill(template: dict, **values) -> dict:
    text = json.dumps(template)
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    return json.loads(text)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
