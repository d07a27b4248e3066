"""Fill the local stack: SQL schema and reference data, Blob templates and containers, queues, the PKI.

Idempotent: what exists is kept (so edits made while exploring survive a restart); what is missing is made.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from local.seed import data, migrations
from local.seed.pki import ensure_intermediate_cas, ensure_root_ca
from shared.bootstrap import Services
from shared.sql import Database

log = logging.getLogger("local.seed")
REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA = REPO_ROOT / "infra" / "sql" / "schema.sql"
TEMPLATES = REPO_ROOT / "infra" / "templates"


def schema_statements(text: str) -> list[str]:
    """Split schema.sql (or a migration) into statements: drop `--` comments, split on `;` at the end of a line."""
    return migrations.statements(text)


def apply_schema(db: Database) -> list[str]:
    """The seed's schema step: the migrations schema_migrations does not record (infra/sql/migrations, the same
    files and rules as deploy.sh), then any table or index of schema.sql, their combined view, that a local
    database lost by hand. Returns what was applied or restored."""
    applied = [f"migration {version}" for version in migrations.apply_migrations(db)]
    return applied + migrations.restore_missing(db, SCHEMA)


def seed_sql(db: Database, hubs: list[data.LocalHub] | None = None) -> None:
    # SQLite only (the local stand-in): write-ahead logging lets readers and one writer work at once, as the
    # function host, the emulators' clients and tests all use the database together.
    db.fetch_all("PRAGMA journal_mode=WAL")
    created = apply_schema(db)
    if created:
        log.info("schema (%s): %s", migrations.MIGRATIONS.relative_to(REPO_ROOT), ", ".join(created))
    for hub in hubs or data.HUBS:
        if not db.fetch_one("SELECT host_name FROM iot_hubs WHERE host_name = ?", [hub.host_name]):
            db.execute(
                "INSERT INTO iot_hubs (host_name, region, max_devices, max_daily_messages, accepting) "
                "VALUES (?, ?, ?, ?, 1)",
                [hub.host_name, hub.region, hub.max_devices, data.HUB_MAX_DAILY_MESSAGES],
            )
    for f in data.facilities():
        if not db.fetch_one("SELECT facility_code FROM facilities WHERE facility_code = ?", [f.code]):
            db.execute(
                "INSERT INTO facilities (facility_code, name, region, preferred_hub, manager_email, active) "
                "VALUES (?, ?, ?, ?, ?, 1)",
                [f.code, f.name, f.region, f.preferred_hub, f.manager_email],
            )
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    for facility, sensor_type, overrides in data.override_rows():
        if not db.fetch_one(
            "SELECT facility_code FROM facility_overrides WHERE facility_code = ? AND sensor_type = ?",
            [facility, sensor_type],
        ):
            db.execute(
                "INSERT INTO facility_overrides (facility_code, sensor_type, overrides, updated_at) "
                "VALUES (?, ?, ?, ?)",
                [facility, sensor_type, overrides, now],
            )


def seed_storage(services: Services) -> None:
    from azure.core.exceptions import ResourceExistsError

    blobs = services.blob_service
    for name in data.CONTAINERS:
        try:
            blobs.create_container(name)
        except ResourceExistsError:
            pass
    container = blobs.get_container_client(services.settings.templates_container)
    for path in sorted(TEMPLATES.glob("*-sensor.json")):
        container.upload_blob(path.name, path.read_bytes(), overwrite=True,
                              content_settings=_json_content())
    for name in data.QUEUES:
        try:
            services.queue_service.create_queue(name)
        except ResourceExistsError:
            pass


def _json_content():
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type="application/json")


def run_seed(services: Services, state_dir: Path, hubs: list[data.LocalHub] | None = None) -> None:
    seed_sql(services.database, hubs)
    seed_storage(services)
    root = ensure_root_ca(state_dir / "pki")
    created = ensure_intermediate_cas(services, root, data.CA_NAMES)
    if created:
        log.info("created regional CAs in Key Vault: %s", ", ".join(created))
