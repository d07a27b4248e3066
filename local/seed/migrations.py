"""Versioned SQL migrations (infra/sql/migrations/NNNN_name.sql) applied to the local SQLite database.

The same rules as infra/deploy.sh's runner on Azure SQL, so one set of files serves both:

- the files are applied in version order; each applied version is recorded in schema_migrations
  (infra/sql/schema_migrations.sql), and a recorded version is never applied again;
- a migration is idempotent statement by statement, because `CREATE TABLE IF NOT EXISTS` is not T-SQL: the runner
  asks the catalog first and skips a `CREATE TABLE` whose table exists, a `CREATE INDEX` whose index exists and an
  `ALTER TABLE t ADD c ...` whose column exists. A database made before migrations existed (no schema_migrations,
  the tables of an older schema.sql) therefore gains what it lacks and gets 0001 recorded; a run that stopped
  half-way completes. Any other statement runs as it is and must be idempotent by itself (an UPDATE with a WHERE
  that excludes rows already done);
- the SQL is the subset of T-SQL that also runs on SQLite through the SQLite3 ODBC driver (docs/contracts.md 9).

The catalog queries here are SQLite's (sqlite_master, pragma_table_info); deploy.sh asks sys.tables, sys.indexes and
COL_LENGTH on Azure SQL and wraps each guarded statement in `IF ... EXEC(N'...')`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = REPO_ROOT / "infra" / "sql"
MIGRATIONS = SQL_DIR / "migrations"
LEDGER = SQL_DIR / "schema_migrations.sql"
FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = re.compile(r"^CREATE\s+TABLE\s+(\w+)\s*\(", re.IGNORECASE)
_CREATE_INDEX = re.compile(r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(\w+)\s+ON\s+(\w+)\s*\(", re.IGNORECASE)
_ADD_COLUMN = re.compile(r"^ALTER\s+TABLE\s+(\w+)\s+ADD\s+(?!CONSTRAINT\b)(\w+)\s", re.IGNORECASE)


def statements(text: str) -> list[str]:
    """Split SQL into statements: drop `--` comments, split on `;` at the end of a line."""
    lines = [line.split("--", 1)[0].rstrip() for line in text.splitlines()]
    found, current = [], []
    for line in lines:
        if not line.strip():
            continue
        current.append(line)
        if line.endswith(";"):
            found.append("\n".join(current).rstrip(";").strip())
            current = []
    if current:
        found.append("\n".join(current).strip())
    return found


@dataclass(frozen=True)
class Guard:
    """What a statement creates, so a runner can skip it when it is there: kind table/index/column, or none."""

    kind: str
    table: str = ""
    name: str = ""


def guard(statement: str) -> Guard:
    if match := _CREATE_TABLE.match(statement):
        return Guard("table", match.group(1))
    if match := _CREATE_INDEX.match(statement):
        return Guard("index", match.group(2), match.group(1))
    if match := _ADD_COLUMN.match(statement):
        return Guard("column", match.group(1), match.group(2))
    return Guard("none")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def statements(self) -> list[str]:
        return statements(self.path.read_text(encoding="utf-8"))


def migrations(directory: Path = MIGRATIONS) -> list[Migration]:
    """The migration files in version order; a file named otherwise, or a version used twice, is an error."""
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.match(path.name)
        if not match:
            raise ValueError(f"{path.name}: a migration is named NNNN_name.sql (four digits, lower-case name)")
        version, name = match.groups()
        if version in found:
            raise ValueError(f"migration version {version} is used by {found[version].path.name} and {path.name}")
        found[version] = Migration(version, name, path)
    return [found[v] for v in sorted(found)]


def _exists(db, item: Guard) -> bool:
    catalog = "SELECT name FROM sqlite_master WHERE type = ? AND name = ?"
    if item.kind == "table":
        return db.fetch_one(catalog, ["table", item.table]) is not None
    if item.kind == "index":
        return db.fetch_one(catalog, ["index", item.name]) is not None
    if item.kind == "column":
        row = db.fetch_one("SELECT COUNT(*) AS n FROM pragma_table_info(?) WHERE name = ?", [item.table, item.name])
        return bool(row and row["n"])
    return False


def ensure_ledger(db) -> None:
    """schema_migrations, created when absent (the runner's own table; its statements are guarded too)."""
    for statement in statements(LEDGER.read_text(encoding="utf-8")):
        if not _exists(db, guard(statement)):
            db.execute(statement)


def applied_versions(db) -> set[str]:
    return {row["version"] for row in db.fetch_all("SELECT version FROM schema_migrations")}


def apply_migrations(db, directory: Path = MIGRATIONS) -> list[str]:
    """Apply the migrations schema_migrations does not record, in order; return the versions applied."""
    ensure_ledger(db)
    done = applied_versions(db)
    applied = []
    for migration in migrations(directory):
        if migration.version in done:
            continue
        for statement in migration.statements:
            if not _exists(db, guard(statement)):
                db.execute(statement)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                   [migration.version, migration.name, now])
        applied.append(migration.version)
    return applied


def restore_missing(db, combined: Path) -> list[str]:
    """Local databases only: create the tables and indexes of the combined schema (infra/sql/schema.sql) that are
    missing although every migration is recorded, i.e. that someone dropped by hand. Run after apply_migrations, so
    the database is at the latest version and the combined schema describes it."""
    created = []
    for statement in statements(combined.read_text(encoding="utf-8")):
        item = guard(statement)
        if item.kind in ("table", "index") and not _exists(db, item):
            db.execute(statement)
            created.append(item.name or item.table)
    return created
