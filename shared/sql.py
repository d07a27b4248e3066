"""Azure SQL through pyodbc (SQLite through the SQLite3 ODBC driver locally).

Parameterised statements only (`?` markers). A connection per thread: pyodbc connections must not be used
by two threads at once, and the Python worker runs synchronous functions on a thread pool. Autocommit: each
statement is its own transaction, so a read never leaves a transaction open that holds locks (on SQLite an
open read transaction blocks every writer until it ends).

SQLite (local only) takes one writer at a time, and its ODBC driver retries a busy database in 10 ms sleeps:
threads of one process that collide on a write would wait many times longer than the write takes. Their
writes queue on a lock instead. Azure SQL locks rows and gets no such lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any


class Database:
    def __init__(self, connection_string: str, timeout_s: int = 15):
        self._connection_string = connection_string
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._write_lock = threading.Lock() if "sqlite" in connection_string.lower() else contextlib.nullcontext()

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            import pyodbc

            conn = pyodbc.connect(self._connection_string, timeout=self._timeout_s, autocommit=True)
            conn.timeout = self._timeout_s  # per-statement timeout: a blocked statement must not hang the webhook
            self._local.conn = conn
        return conn

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._connection().cursor()
        try:
            cursor.execute(sql, *params) if params else cursor.execute(sql)
            columns = [c[0] for c in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.fetch_all(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement (its own transaction); return the affected row count."""
        cursor = self._connection().cursor()
        try:
            with self._write_lock:
                cursor.execute(sql, *params) if params else cursor.execute(sql)
            return cursor.rowcount
        finally:
            cursor.close()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
