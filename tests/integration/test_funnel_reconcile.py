"""The funnel's reconciler against the IoT Hub emulator (twin queries, conditional tag PATCHes, lastActivityTime moved
by the device's own mutual-TLS calls) and SQL on SQLite: each stage transition once, idempotent re-runs, a silent
sensor flagged stuck, digested once to its manager and cleared when it sends, and live sensors' telemetry costing no
work at all."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import time
import uuid

import pytest
from azure.iot.hub import IoTHubRegistryManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from funnel.records import DigestLedger
from funnel.service import Reconciler
from funnel.settings import FunnelSettings
from funnel.stages import StageLimits
from local.fleet.device_link import DeviceConnection
from local.iothub import HubConfig, RateLimits, connection_string, create_app
from local.seed import migrations
from local.serve import free_port, serve_in_thread
from shared.audit import AuditWriter
from shared.facilities import Facility
from shared.iothub import IotHub
from shared.retry import RetryPolicy
from shared.sql import Database

pytestmark = pytest.mark.integration

OWNER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
HASH = "sha256:" + hashlib.sha256(b"configuration").hexdigest()
FAC01 = Facility("FAC01", "Plant One", "west", "hub", "manager1@example.com", True)


class DevicePki:
    def __init__(self, directory):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Funnel Test Device Root")])
        now = dt.datetime.now(dt.UTC)
        self.root = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.file = directory / "root.pem"
        self.file.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return DevicePki(tmp_path_factory.mktemp("funnel-pki"))


@pytest.fixture(scope="module")
def hub(tls, pki, tmp_path_factory):
    port = free_port()
    config = HubConfig(name="iothub-funnel-local", host_name=f"localhost:{port}",
                       state_dir=tmp_path_factory.mktemp("hub"), port=port, policies={"iothubowner": OWNER_KEY},
                       rate_limits=RateLimits(enabled=False))
    app = create_app(config)
    server = serve_in_thread(app, port, tls, client_ca=[pki.file])
    yield app.state.hub
    server.stop()


@pytest.fixture(scope="module")
def registry(hub):
    manager = IoTHubRegistryManager.from_connection_string(connection_string(hub.config))
    yield manager
    manager.protocol.close()


@pytest.fixture
def database(tmp_path):
    db = Database(f"Driver=SQLite3;Database={tmp_path / 'funnel.sqlite'}")
    migrations.apply_migrations(db)
    yield db
    db.close()


class Sent:
    def __init__(self):
        self.queued: list[dict] = []
        self.mailed: list[tuple] = []

    def queue(self, message: dict) -> None:
        self.queued.append(message)

    def email(self, to, content, cc=()) -> None:
        self.mailed.append((tuple(to), content["subject"]))


QUIET = StageLimits(acknowledged_s=3600, live_margin_s=0.2)


def reconciler(hub, registry, database, sent, limits=QUIET):
    gateway = IotHub(lambda host: registry, RetryPolicy(attempts=2, budget_s=5), timeout_s=10)
    return Reconciler(FunnelSettings(limits=limits), gateway, [hub.config.host_name], AuditWriter(database),
                      DigestLedger(database), {"FAC01": FAC01}.get, sent.queue, sent.email)


def onboarded(hub, registry, pki, tls, *, configured: bool = True):
    """A sensor as allocation and twin setup leave it: allocation tags, then twin setup's tags and desired."""
    device_id = f"sensor-temp-FAC01-SN{uuid.uuid4().hex[:8].upper()}"
    cert, key = pki.issue(device_id)
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - IoT Hub's thumbprint is SHA-1
    registry.create_device_with_x509(device_id, thumbprint, thumbprint, "enabled")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    onboarding = {"allocatedAt": now, "policyVersion": "1"}
    desired = None
    if configured:
        onboarding.update(status="configured", configurationHash=HASH, configuredAt=now)
        desired = {"onboarding": {"state": "configured", "configurationHash": HASH}}
    from azure.iot.hub.models import Twin, TwinProperties

    registry.update_twin(device_id, Twin(tags={"facility": "FAC01", "onboarding": onboarding},
                                         properties=TwinProperties(desired=desired)), "*")
    return device_id, DeviceConnection(hub.config.host_name, cert, key, [], tls.ca_cert, device_id=device_id)


def acknowledge(device: DeviceConnection) -> None:
    """What the simulated firmware does once it applied its configuration (local/fleet/device.py)."""
    version = device.twin()["desired"]["$version"]
    device.report({"configuration": {"hash": HASH, "desiredVersion": version,
                                     "appliedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})


def stage_rows(database, device_id) -> dict[str, str]:
    return {r["stage"]: str(r["at"]) for r in database.fetch_all(
        "SELECT stage, at FROM onboarding_stages WHERE device_id = ?", [device_id])}


def funnel_tag(registry, device_id) -> dict:
    return registry.get_twin(device_id).tags["onboarding"]


def test_each_stage_is_recorded_once_with_its_time_and_a_live_sensor_leaves_the_query(hub, registry, pki, tls,
                                                                                       database):
    sent = Sent()
    funnel = reconciler(hub, registry, database, sent)
    device_id, device = onboarded(hub, registry, pki, tls)
    with device:
        first = funnel.run()
        assert stage_rows(database, device_id).keys() == {"allocated", "created", "configured"}
        assert funnel_tag(registry, device_id)["stage"] == "configured"

        acknowledge(device)
        funnel.run()
        assert funnel_tag(registry, device_id)["stage"] == "acknowledged"
        assert "acknowledged" in stage_rows(database, device_id) and "live" not in stage_rows(database, device_id)

        time.sleep(1.3)  # past the acknowledgement's second and the margin: telemetry, not the ack's own activity
        device.send_event({"temperature": 21.5})
        funnel.run()
        tag = funnel_tag(registry, device_id)
        assert tag["stage"] == "live" and set(tag["stages"]) == {"allocated", "created", "configured",
                                                                   "acknowledged", "live"}
        assert tag["stages"]["live"] >= tag["stages"]["acknowledged"] >= tag["stages"]["configured"]
        rows = stage_rows(database, device_id)
        assert len(rows) == 5

        # steady state: the live sensor keeps sending; the funnel neither sees it nor writes anything
        for n in range(20):
            device.send_event({"temperature": 21.5 + n})
        again = funnel.run()
    assert stage_rows(database, device_id) == rows  # a re-run adds no row
    assert again.updated == 0 and again.transitions == {} and device_id not in {
        s.device_id for s in again.stuck_sensors}
    assert again.queries == first.queries == 1  # one page per hub while few sensors are pending
    assert funnel_tag(registry, device_id)["stages"] == tag["stages"]
    # the audit holds the twin's times
    assert rows["live"].replace(" ", "T").startswith(tag["stages"]["live"][:19])


def test_a_silent_sensor_is_stuck_digested_once_to_its_manager_and_cleared_when_it_sends(hub, registry, pki, tls,
                                                                                         database):
    sent = Sent()
    funnel = reconciler(hub, registry, database, sent, StageLimits(acknowledged_s=1, live_margin_s=0.2))
    device_id, device = onboarded(hub, registry, pki, tls)
    with device:
        acknowledge(device)
        funnel.run()
        time.sleep(1.5)
        report = funnel.run()
        assert funnel_tag(registry, device_id)["stuck"]["stage"] == "acknowledged"
        assert device_id in {s.device_id for s in report.stuck_sensors} and report.newly_stuck >= 1
        mine = [m for m in sent.queued if any(d["deviceId"] == device_id for d in m["devices"])]
        assert len(mine) == 1 and mine[0]["type"] == "onboardingStuckDigest" and mine[0]["stage"] == "acknowledged"
        assert mine[0]["to"] == ["manager1@example.com"] and any("8883" in line for line in mine[0]["checks"])
        assert sent.mailed and sent.mailed[0][0] == ("manager1@example.com",)

        funnel.run()  # still stuck: counted, but the day's digest for FAC01 / acknowledged went out already
        assert len([m for m in sent.queued if m["stage"] == "acknowledged"]) == 1

        time.sleep(1.3)
        device.send_event({"temperature": 20.0})
        funnel.run()
    tag = funnel_tag(registry, device_id)
    assert tag["stage"] == "live" and "stuck" not in tag



def test_a_stage_sql_did_not_take_leaves_the_tags_so_the_next_run_records_it(hub, registry, pki, tls, database):
    class SqlDown(AuditWriter):
        def onboarding_stages(self, rows):
            return None  # as the writer answers when SQL failed

    sent = Sent()
    device_id, device = onboarded(hub, registry, pki, tls)
    device.close()
    down = reconciler(hub, registry, database, sent)
    down.audit = SqlDown(database)
    assert down.run().unaudited >= 1
    assert "stage" not in funnel_tag(registry, device_id) and stage_rows(database, device_id) == {}
    reconciler(hub, registry, database, sent).run()
    assert funnel_tag(registry, device_id)["stage"] == "configured"
    assert stage_rows(database, device_id).keys() == {"allocated", "created", "configured"}


def test_the_operator_command_shows_stages_and_stuck_sensors_without_writing(hub, registry, pki, tls, database,
                                                                             monkeypatch):
    import argparse
    import io
    from types import SimpleNamespace

    import funnel.wiring
    from cli import funnel as command

    sent = Sent()
    device_id, device = onboarded(hub, registry, pki, tls)
    with device:
        acknowledge(device)
    reconciler(hub, registry, database, sent).run()
    etag = registry.get_twin(device_id).etag
    gateway = IotHub(lambda host: registry, RetryPolicy(attempts=2, budget_s=5), timeout_s=10)
    svc = SimpleNamespace(database=database, iothub=lambda: gateway,
                          settings=SimpleNamespace(iot_hub_host_names=[hub.config.host_name]))
    monkeypatch.setattr(funnel.wiring, "funnel", lambda: SimpleNamespace(
        svc=svc, settings=FunnelSettings(limits=StageLimits(configured_s=1, acknowledged_s=0.5))))
    time.sleep(1.1)
    outcome = command.run(argparse.Namespace(hours=1, stuck=50))
    out = io.StringIO()
    outcome.render(outcome.data, out)
    assert outcome.data["reached"]["acknowledged"] >= 1
    assert device_id in {s["deviceId"] for s in outcome.data["stuck"]}
    assert f"{device_id}" in out.getvalue() and "acknowledged" in out.getvalue()
    assert registry.get_twin(device_id).etag == etag  # read-only: the tags are as the reconciler left them
