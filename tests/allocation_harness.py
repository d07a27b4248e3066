"""An allocation webhook wired to real SQL (SQLite ODBC), real CRL verification and fake Azure clients (Key Vault
certificates with versions, the CRL container in memory)."""

from __future__ import annotations

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
from tests.unit.test_crl_store import MemoryBlobStore

HUBS = {"hub-west.azure-devices.net": "west", "hub-west2.azure-devices.net": "west",
        "hub-central.azure-devices.net": "central", "hub-east.azure-devices.net": "east"}


class FakeCertificates:
    """Key Vault's certificates: each CA name has versions (the last one is the newest), enabled unless disabled."""

    def __init__(self, cas: dict[str, TestCa]):
        self.versions: dict[str, list[tuple[TestCa, bool]]] = {name: [(ca, True)] for name, ca in cas.items()}
        self.calls = 0

    def add_version(self, name: str, ca: TestCa, enabled: bool = True) -> None:
        self.versions.setdefault(name, []).append((ca, enabled))

    def list_properties_of_certificate_versions(self, name):
        from azure.core.exceptions import ResourceNotFoundError

        self.calls += 1
        if name not in self.versions:
            raise ResourceNotFoundError(f"certificate {name} not found")
        return [SimpleNamespace(version=str(i), enabled=enabled, not_before=ca.certificate.not_valid_before_utc,
                                expires_on=ca.certificate.not_valid_after_utc,
                                created_on=NOW - dt.timedelta(days=100 - i))
                for i, (ca, enabled) in enumerate(self.versions[name])]

    def get_certificate_version(self, name, version):
        ca, _ = self.versions[name][int(version)]
        return SimpleNamespace(cer=ca.certificate.public_bytes(serialization.Encoding.DER))


class FakeQueue:
    def __init__(self):
        self.messages: list[dict] = []

    def send_message(self, text):
        self.messages.append(json.loads(text))


@dataclass
class Webhook:
    db: Database
    ca: TestCa
    crls: MemoryBlobStore
    device_counts: dict[str, int]
    alerts: FakeQueue
    context: AllocationContext
    calls: list = field(default_factory=list)
    last_headers: dict = field(default_factory=dict)

    def publish_crl(self, revoked=(), ca: TestCa | None = None, **kwargs) -> None:
        """Store a CRL of `ca` (default: the webhook's CA) as its blob and make the webhook read it again."""
        ca = ca or self.ca
        self.crls.put(f"{ca.name}.crl", ca.crl(list(revoked), **kwargs))
        self.context.trust.invalidate()

    def post(self, body) -> tuple[int, dict]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = func.HttpRequest("POST", "http://localhost/api/allocate", body=raw, headers={})
        resp = handler.allocate(req)
        self.last_headers = dict(resp.headers)
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
    crls = MemoryBlobStore()
    counts = dict.fromkeys(HUBS, 0)
    context = AllocationContext(
        trust=TrustStore(settings, FakeCertificates({ca.name: ca}), crls, now=lambda: NOW),
        facilities=FacilityDirectory(db, 60),
        capacity=CapacityMonitor(db, lambda host: counts[host], list(HUBS), ttl_s=0, quiet_s=0),
        issued_certificate=lambda device_id: issued_certificate(db, device_id),
        utilisation_threshold=0.9,
    )
    alerts = FakeQueue()
    monkeypatch.setattr(handler, "allocation_context", lambda: context)
    monkeypatch.setattr(handler, "audit_trail", lambda: AuditTrail(db, lambda: alerts))
    hook = Webhook(db, ca, crls, counts, alerts, context)
    hook.publish_crl()
    return hook


def fill(template: dict, **values) -> dict:
    text = json.dumps(template)
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    return json.loads(text)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
