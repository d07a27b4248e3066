"""shared/sql.py: a connection that failed is discarded and the next call opens a new one (SQLite ODBC)."""

from __future__ import annotations

import pytest

from shared.sql import Database

pytestmark = pytest.mark.integration


def test_a_broken_connection_is_discarded_and_reopened(tmp_path):
    import pyodbc

    db = Database(f"Driver=SQLite3;Database={tmp_path / 'r.db'}", timeout_s=1)
    db.execute("CREATE TABLE t (a INTEGER)")
    db.execute("INSERT INTO t (a) VALUES (?)", [1])
    first = db._local.conn
    first.close()  # the link is gone under the thread's connection (a failover, a dropped socket)
    with pytest.raises(pyodbc.Error):
        db.fetch_all("SELECT a FROM t")
    assert db.reconnects == 1 and db._local.conn is None
    assert db.fetch_all("SELECT a FROM t") == [{"a": 1}]  # the next call reconnects
    assert db._local.conn is not first
    assert db.execute("INSERT INTO t (a) VALUES (?)", [2]) == 1


def test_a_statement_error_keeps_the_connection(tmp_path):
    import pyodbc

    db = Database(f"Driver=SQLite3;Database={tmp_path / 'r.db'}", timeout_s=1)
    db.execute("CREATE TABLE t (a INTEGER)")
    conn = db._local.conn
    with pytest.raises(pyodbc.Error):
        db.fetch_all("SELECT nope FROM t")
    assert db._local.conn is conn and db.reconnects == 0


def test_an_operational_error_discards_the_connection(tmp_path, monkeypatch):
    import pyodbc

    db = Database(f"Driver=SQLite3;Database={tmp_path / 'r.db'}", timeout_s=1)
    db.execute("CREATE TABLE t (a INTEGER)")

    class Broken:
        def cursor(self):
            raise pyodbc.OperationalError("08S01", "[08S01] Communication link failure")

        def close(self):
            pass

    db._local.conn = Broken()
    with pytest.raises(pyodbc.OperationalError):
        db.fetch_all("SELECT a FROM t")
    assert db.fetch_all("SELECT a FROM t") == [] and db.reconnects == 1
