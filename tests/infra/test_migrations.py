"""Versioned SQL migrations (infra/sql/migrations) on SQLite through the SQLite3 ODBC driver, as the local seed runs
them: all of them on an empty database give the schema of schema.sql (their combined view) and of the seed; applying
them twice changes nothing; a pre-migration database is adopted; later migrations apply in order, only once."""

from __future__ import annotations

import re
import shutil

import pytest

from local.seed import migrations
from local.seed.seed import SCHEMA, seed_sql
from shared.sql import Database


@pytest.fixture
def connect(tmp_path):
    opened = []

    def open_db(name: str = "db") -> Database:
        db = Database(f"Driver=SQLite3;Database={tmp_path / f'{name}.sqlite'}")
        opened.append(db)
        return db

    yield open_db
    for db in opened:
        db.close()


def schema(db: Database, *, ledger: bool = True) -> list[tuple]:
    """sqlite_master without SQLite's own objects: (type, name, table, sql with whitespace normalised)."""
    rows = db.fetch_all("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                        "ORDER BY type, name")
    found = [(r["type"], r["name"], r["tbl_name"], " ".join((r["sql"] or "").split())) for r in rows]
    return [row for row in found if ledger or row[2] != "schema_migrations"]


def columns(db: Database, table: str) -> list[tuple]:
    return [(r["name"], r["type"], r["notnull"], r["dflt_value"], r["pk"])
            for r in db.fetch_all("SELECT * FROM pragma_table_info(?)", [table])]


def test_the_migration_files_are_numbered_and_start_with_the_initial_schema():
    found = migrations.migrations()
    assert [m.version for m in found][:1] == ["0001"] and found[0].name == "initial"
    assert [m.version for m in found] == sorted({m.version for m in found})
    for migration in found:
        for statement in migration.statements:
            # Every statement is one a runner can guard, or the migration cannot be applied twice safely.
            assert migrations.guard(statement).kind != "none", f"{migration.path.name}: {statement[:60]}"
            assert not re.search(r"\bIF\s+NOT\s+EXISTS\b|\bIDENTITY\b|NVARCHAR\(MAX\)", statement, re.I), statement


def test_all_migrations_give_the_combined_schema_and_the_seeds(connect):
    migrated, combined, seeded = connect("migrated"), connect("combined"), connect("seeded")
    assert migrations.apply_migrations(migrated) == [m.version for m in migrations.migrations()]
    for statement in migrations.statements(SCHEMA.read_text()):
        combined.execute(statement)
    seed_sql(seeded)
    assert schema(migrated, ledger=False) == schema(combined)
    assert schema(migrated) == schema(seeded)
    tables = [row[1] for row in schema(combined) if row[0] == "table"]
    assert len(tables) == 14 and {"facilities", "hub_allocations", "certificate_events", "config_rollouts",
                                 "config_rollout_devices", "onboarding_stages", "onboarding_digests",
                                 "config_override_keys"} <= set(tables)
    indexes = [row[1] for row in schema(combined) if row[0] == "index" and row[3]]
    assert {"ix_certificates_device", "ix_certificates_lot", "ux_config_rollouts_source",
            "ix_onboarding_stages_at"} <= set(indexes)
    assert len(indexes) == 9
    for table in tables:
        assert columns(migrated, table) == columns(combined, table), table


def test_applying_twice_changes_nothing(connect):
    db = connect()
    first = migrations.apply_migrations(db)
    before = schema(db)
    ledger = db.fetch_all("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    assert migrations.apply_migrations(db) == []
    assert schema(db) == before
    assert db.fetch_all("SELECT version, name, applied_at FROM schema_migrations ORDER BY version") == ledger
    assert [row["version"] for row in ledger] == first


def test_a_database_from_before_migrations_is_adopted(connect):
    # An older schema.sql made facilities and iot_hubs only; the data stays, the missing tables appear, 0001 is
    # recorded.
    db = connect()
    for statement in migrations.migrations()[0].statements[:2]:
        db.execute(statement)
    db.execute("INSERT INTO facilities (facility_code, name, region, preferred_hub, manager_email) "
               "VALUES ('FAC01', 'Plant', 'west', 'hub', 'm@example.com')")
    assert migrations.apply_migrations(db) == [m.version for m in migrations.migrations()]
    assert db.fetch_one("SELECT COUNT(*) AS n FROM facilities")["n"] == 1
    assert db.fetch_one("SELECT COUNT(*) AS n FROM certificate_events")["n"] == 0


def test_later_migrations_apply_in_order_once_and_only_what_they_introduce(connect, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    shutil.copy(migrations.MIGRATIONS / "0001_initial.sql", folder)
    (folder / "0003_site_contact.sql").write_text(
        "-- a column and its index\nALTER TABLE facilities ADD site_contact NVARCHAR(320) NULL;\n"
        "CREATE INDEX ix_facilities_contact ON facilities (site_contact);\n")
    (folder / "0002_hub_notes.sql").write_text(
        "CREATE TABLE hub_notes (\n    host_name NVARCHAR(255) NOT NULL PRIMARY KEY,\n"
        "    note NVARCHAR(4000) NOT NULL\n);\n")
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(migrations.MIGRATIONS / "0001_initial.sql", first)
    db = connect()
    assert migrations.apply_migrations(db, first) == ["0001"]
    assert migrations.apply_migrations(db, folder) == ["0002", "0003"]
    assert "site_contact" in [c[0] for c in columns(db, "facilities")]
    assert migrations.apply_migrations(db, folder) == []
    # A run that stopped after the column: the version is not recorded, the rerun skips what exists and completes.
    db.execute("DELETE FROM schema_migrations WHERE version = '0003'")
    db.execute("DROP INDEX ix_facilities_contact")
    assert migrations.apply_migrations(db, folder) == ["0003"]
    assert any(row[1] == "ix_facilities_contact" for row in schema(db))


def test_badly_named_or_duplicate_versions_are_refused(tmp_path):
    (tmp_path / "0001_initial.sql").write_text("")
    (tmp_path / "0001_again.sql").write_text("")
    with pytest.raises(ValueError, match="0001"):
        migrations.migrations(tmp_path)
    (tmp_path / "0001_again.sql").unlink()
    (tmp_path / "2_later.sql").write_text("")
    with pytest.raises(ValueError, match="NNNN_name"):
        migrations.migrations(tmp_path)


def test_the_seed_restores_a_table_dropped_by_hand(connect):
    db = connect()
    seed_sql(db)
    db.execute("DROP TABLE certificate_events")
    seed_sql(db)
    assert db.fetch_one("SELECT COUNT(*) AS n FROM certificate_events")["n"] == 0
    assert db.fetch_one("SELECT COUNT(*) AS n FROM schema_migrations")["n"] == len(migrations.migrations())


def test_0002_keeps_each_issued_certificate_beside_its_row(connect):
    # The column a disabled DPS individual enrollment needs (the revoked certificate itself), added to a register that
    # already holds rows: they keep their values and get NULL (issued before: not pinnable, the revocation warns).
    folder = migrations.MIGRATIONS
    db = connect()
    for statement in migrations.migrations(folder)[0].statements:
        db.execute(statement)
    db.execute("INSERT INTO certificates (issuer, serial_number, device_id, not_before, not_after) "
               "VALUES ('CN=West', 'AB', 'sensor-temp-FAC01-SN1', '2026-01-01 00:00:00', '2028-01-01 00:00:00')")
    assert "0002" in migrations.apply_migrations(db)
    assert ("certificate_pem", "NVARCHAR(4000)", 0, None, 0) in columns(db, "certificates")
    select = "SELECT certificate_pem FROM certificates WHERE serial_number = 'AB'"
    assert db.fetch_one(select)["certificate_pem"] is None
    pem = "-----BEGIN CERTIFICATE-----\n" + "A" * 3900 + "\n-----END CERTIFICATE-----\n"
    db.execute("UPDATE certificates SET certificate_pem = ? WHERE serial_number = 'AB'", [pem])
    assert db.fetch_one(select)["certificate_pem"] == pem


def test_0004_records_the_lot_and_issue_time_of_each_certificate(connect):
    # Added to a register that holds rows: they keep their values and get NULL (issued before lots existed).
    db = connect()
    for statement in migrations.migrations()[0].statements:
        db.execute(statement)
    db.execute("INSERT INTO certificates (issuer, serial_number, device_id, not_before, not_after) "
               "VALUES ('CN=West', 'AB', 'sensor-temp-FAC01-SN1', '2026-01-01 00:00:00', '2028-01-01 00:00:00')")
    assert "0004" in migrations.apply_migrations(db)
    assert ("lot", "NVARCHAR(64)", 0, None, 0) in columns(db, "certificates")
    assert ("issued_at", "DATETIME2", 0, None, 0) in columns(db, "certificates")
    assert any(row[1] == "ix_certificates_lot" for row in schema(db))
    assert db.fetch_one("SELECT lot, issued_at FROM certificates WHERE serial_number = 'AB'") == {
        "lot": None, "issued_at": None}


def test_0005_records_when_dps_first_provisioned_a_device_with_each_certificate(connect):
    db = connect()
    for statement in migrations.migrations()[0].statements:
        db.execute(statement)
    db.execute("INSERT INTO certificates (issuer, serial_number, device_id, not_before, not_after) "
               "VALUES ('CN=West', 'AB', 'sensor-temp-FAC01-SN1', '2026-01-01 00:00:00', '2028-01-01 00:00:00')")
    assert "0005" in migrations.apply_migrations(db)
    assert ("provisioned_at", "DATETIME2", 0, None, 0) in columns(db, "certificates")
    assert db.fetch_one("SELECT provisioned_at FROM certificates WHERE serial_number = 'AB'") == {
        "provisioned_at": None}


def test_0007_keeps_one_onboarding_stage_row_per_sensor_and_stage(connect):
    from shared.audit import AuditWriter

    db = connect()
    assert "0007" in migrations.apply_migrations(db)
    audit = AuditWriter(db)
    import datetime as dt

    at = dt.datetime(2026, 11, 30, 12, 0, 5, tzinfo=dt.UTC)
    assert audit.onboarding_stage("sensor-temp-FAC01-SN1", "live", at, hub="h", facility="FAC01") is True
    assert audit.onboarding_stage("sensor-temp-FAC01-SN1", "live", at + dt.timedelta(seconds=30)) is False
    assert audit.onboarding_stage("sensor-temp-FAC01-SN1", "bogus", at) is None  # the CHECK refuses it
    rows = db.fetch_all("SELECT stage, at FROM onboarding_stages")
    assert len(rows) == 1 and str(rows[0]["at"]).startswith("2026-11-30 12:00:05")
