"""Azure SQL through pyodbc (SQLite through the SQLite3 ODBC driver locally).

Parameterised statements only (`?` markers). A connection per thread: pyodbc connections must not be used
by two threads at once, and the Python worker runs synchronous functions on a thread pool. Autocommit: each
statement is its own transaction, so a read never leaves a transaction open that holds locks (on SQLite an
open read transaction blocks every writer until it ends).

SQLite (local only) takes one writer at a time, and its ODBC driver retries a busy database in 10 ms sleeps:
threads of one process that collide on a write would wait many times longer than the write takes. Their
writes queue on a lock instead (waited for at most the statement timeout). Azure SQL locks rows and gets no such
lock.

Recovery: a connection that failed (communication link failure, a timeout, an Azure SQL failover: SQLSTATE 08xxx,
HYT00/HYT01, pyodbc's OperationalError and InterfaceError, or a connection found closed) is discarded, and the
thread's next call opens a new one. The failing statement's error still surfaces: a write is never sent twice
here, the caller's own retry (or DPS's, or the platform's) decides.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

from shared import usage

log = logging.getLogger(__name__)
BROKEN_STATES = ("08", "HYT00", "HYT01", "IM006")  # connection exceptions, timeouts, driver's connect failure


def connection_broken(exc: BaseException) -> bool:
    """True when exc says the connection itself can no longer be trusted (discard it, open a new one)."""
    import pyodbc

    if isinstance(exc, pyodbc.OperationalError | pyodbc.InterfaceError):
        return True
    if not isinstance(exc, pyodbc.Error):
        return False
    state = str(exc.args[0]) if exc.args else ""
    return state.startswith(BROKEN_STATES) or "closed connection" in str(exc).lower()


class Database:
    def __init__(self, connection_string: str, timeout_s: float = 15):
        if "sqlite" in connection_string.lower() and "timeout=" not in connection_string.lower():
            # The SQLite3 ODBC driver ignores the statement timeout; its busy timeout (ms, default 100 s) is how
            # long a statement waits for a lock another connection holds.
            connection_string = f"{connection_string.rstrip(';')};Timeout={int(timeout_s * 1000)}"
        self._connection_string = connection_string
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._write_lock = threading.Lock() if "sqlite" in connection_string.lower() else None
        self.reconnects = 0  # connections discarded after a failure (tests, health)

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            import pyodbc

            whole_s = max(1, math.ceil(self._timeout_s))  # ODBC's login and query timeouts are whole seconds
            conn = pyodbc.connect(self._connection_string, timeout=whole_s, autocommit=True)
            conn.timeout = whole_s  # per-statement timeout: a blocked statement must not hang the webhook
            self._local.conn = conn
        return conn

    def _discard(self, exc: BaseException) -> None:
        """Drop this thread's connection after a failure that may have broken it."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        self.reconnects += 1
        log.warning("sql: connection discarded after %s; the next call opens a new one", type(exc).__name__)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def _cursor(self):
        try:
            cursor = self._connection().cursor()
        except Exception as exc:
            if connection_broken(exc):
                self._discard(exc)
            raise
        try:
            yield cursor
        except Exception as exc:
            if connection_broken(exc):
                self._discard(exc)
            raise
        finally:
            with contextlib.suppress(Exception):
                cursor.close()

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        usage.count("sql")  # a round trip (shared/usage.py)
        with self._cursor() as cursor:
            cursor.execute(sql, *params) if params else cursor.execute(sql)
            columns = [c[0] for c in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.fetch_all(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement (its own transaction); return the affected row count."""
        usage.count("sql")
        with self._cursor() as cursor, self._writer():
            cursor.execute(sql, *params) if params else cursor.execute(sql)
            return cursor.rowcount

    @contextlib.contextmanager
    def _writer(self):
        """SQLite: one writer of this process at a time, waited for at most the statement timeout."""
        if self._write_lock is None:
            yield
            return
        if not self._write_lock.acquire(timeout=self._timeout_s):
            raise TimeoutError(f"sql: another write of this process held the database for {self._timeout_s}s")
        try:
            yield
        finally:
            self._write_lock.release()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()
