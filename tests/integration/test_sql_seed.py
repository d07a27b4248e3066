"""The schema and seed run through pyodbc and the SQLite3 ODBC driver, as the local stack runs them."""

import re

import pytest

from local.seed import data
from local.seed.seed import SCHEMA, schema_statements, seed_sql
from shared.sql import Database

pytestmark = pytest.mark.integration


@pytest.fixture
def db(tmp_path):
    database = Database(f"Driver=SQLite3;Database={tmp_path / 'onboarding.db'}")
    yield database
    database.close()


def test_schema_splits_into_its_statements():
    statements = schema_statements(SCHEMA.read_text())
    created = [s.split()[2] for s in statements if s.startswith("CREATE TABLE")]
    migrations = SCHEMA.parent / "migrations"
    in_migrations = [t for path in sorted(migrations.glob("[0-9]*.sql"))
                     for t in re.findall(r"^CREATE TABLE (\w+)", path.read_text(), re.MULTILINE)]
    assert sorted(created) == sorted(in_migrations)  # the combined view holds every migration's tables
    assert {"facilities", "partners", "config_rollouts", "onboarding_stages"} <= set(created)
    assert all(";" not in s and "--" not in s for s in statements)


def test_seed_creates_the_reference_plants(db):
    seed_sql(db)
    rows = db.fetch_all("SELECT facility_code, region, preferred_hub, active FROM facilities ORDER BY facility_code")
    assert [r["facility_code"] for r in rows] == [f"FAC{n:02d}" for n in range(1, 13)]
    regions = {r["facility_code"]: r["region"] for r in rows}
    assert regions["FAC01"] == "west" and regions["FAC06"] == "central" and regions["FAC12"] == "east"
    hubs = {h.region: h.host_name for h in data.HUBS}
    assert all(r["preferred_hub"] == hubs[r["region"]] for r in rows)
    assert all(r["active"] == 1 for r in rows)
    assert db.fetch_one("SELECT COUNT(*) AS n FROM iot_hubs")["n"] == 3
    overrides = db.fetch_all("SELECT sensor_type FROM facility_overrides WHERE facility_code = ?", ["FAC03"])
    assert sorted(r["sensor_type"] for r in overrides) == ["*", "temperature"]


def test_seed_is_idempotent_and_keeps_edits(db):
    seed_sql(db)
    db.execute("UPDATE iot_hubs SET accepting = 0 WHERE host_name = ?", ["localhost:8441"])
    seed_sql(db)
    assert db.fetch_one("SELECT COUNT(*) AS n FROM facilities")["n"] == 12
    assert db.fetch_one("SELECT accepting FROM iot_hubs WHERE host_name = ?", ["localhost:8441"])["accepting"] == 0


def test_schema_constraints_hold(db):
    seed_sql(db)
    with pytest.raises(Exception, match=r"(?i)constraint|unique"):
        db.execute("INSERT INTO facilities (facility_code, name, region, preferred_hub, manager_email) "
                   "VALUES (?, ?, ?, ?, ?)", ["FAC01", "dup", "west", "h", "m@example.com"])
    with pytest.raises(Exception, match=r"(?i)constraint"):
        db.execute("INSERT INTO provisioning_events (event_id, at, registration_id, outcome) VALUES (?, ?, ?, ?)",
                   ["00000000-0000-0000-0000-000000000001", "2026-11-23T00:00:00", "r", "maybe"])


def test_a_database_from_an_older_checkout_gains_the_new_tables(db):
    seed_sql(db)
    db.execute("DROP TABLE certificate_events")
    seed_sql(db)
    assert db.fetch_one("SELECT COUNT(*) AS n FROM certificate_events")["n"] == 0
    assert db.fetch_one("SELECT COUNT(*) AS n FROM facilities")["n"] == 12
