"""An SQL fault for the local stack (issue 16): SQLite stands in for Azure SQL and cannot take a fault profile, so a
separate connection takes a lock on the database file on a schedule, as a long transaction or a failover holds Azure
SQL up. From the profile's "sql" service:

    "sql": {"locks": [{"after_s": 75, "for_s": 3, "every_s": 240, "mode": "exclusive"}]}

- Each lock starts `after_s` seconds after the locker started and is held `for_s` seconds; `every_s` repeats it.
- mode "exclusive" (default): BEGIN EXCLUSIVE; "write": BEGIN IMMEDIATE. The stack's database is in WAL mode
  (local/seed/seed.py), where both hold off every writer and readers go on (as Azure SQL's readers under read
  committed snapshot do); on a rollback-journal file "exclusive" holds off readers too.
- The app's statements wait out the lock up to their connection's busy timeout, then fail: the allocation webhook
  answers within its deadline whatever SQL does, the timers and workers retry on their next run or delivery.

The stack runs it as a child process only when the profile names "sql" (local/stack.py); `python -m local.sql_faults
--faults bad-day --database .local/onboarding.db` runs it on its own; tests use SqliteLocker(...).start().
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from local.faults import ENV_PROFILE, ProfileError, load_profile, window_open

log = logging.getLogger("local.sql_faults")
SERVICE = "sql"
MODES = {"exclusive": "BEGIN EXCLUSIVE", "write": "BEGIN IMMEDIATE"}


@dataclass(frozen=True)
class LockWindow:
    after_s: float
    for_s: float
    every_s: float | None = None
    mode: str = "exclusive"

    def open_at(self, elapsed_s: float) -> bool:
        return window_open(elapsed_s, self.after_s, self.for_s, self.every_s)


def lock_windows(document: dict, name: str = "profile") -> tuple[LockWindow, ...]:
    """The "sql" service's lock windows of a profile document (none when it has no "sql")."""
    raw = (document.get("services") or {}).get(SERVICE)
    if raw is None:
        return ()
    unknown = sorted(set(raw) - {"locks"})
    if unknown:
        raise ProfileError(f"{name}: services.sql: unknown key(s) {unknown}; known: ['locks']")
    windows = []
    for i, lock in enumerate(raw.get("locks") or []):
        where = f"{name}: services.sql.locks[{i}]"
        try:
            window = LockWindow(float(lock["after_s"]), float(lock["for_s"]),
                                float(lock["every_s"]) if lock.get("every_s") else None,
                                str(lock.get("mode", "exclusive")))
        except (KeyError, TypeError, ValueError):
            raise ProfileError(f"{where}: needs after_s and for_s (numbers), every_s optional") from None
        if window.mode not in MODES:
            raise ProfileError(f"{where}: mode {window.mode!r}; known: {sorted(MODES)}")
        if window.for_s <= 0 or (window.every_s is not None and window.every_s <= window.for_s):
            raise ProfileError(f"{where}: for_s must be > 0 and shorter than every_s")
        windows.append(window)
    return tuple(windows)


class SqliteLocker:
    """Holds a lock on one SQLite file during each window; counts the locks it took and the ones it could not
    (another writer held the file: it tries again within the window)."""

    def __init__(self, database: Path, windows: tuple[LockWindow, ...], clock: Callable[[], float] = time.monotonic):
        self.database = Path(database)
        self.windows = windows
        self._clock = clock
        self._started = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.locks_taken = 0
        self.locked_s = 0.0
        self.busy = 0

    def _open_window(self) -> LockWindow | None:
        elapsed = self._clock() - self._started
        return next((w for w in self.windows if w.open_at(elapsed)), None)

    def _hold(self, window: LockWindow) -> None:
        connection = sqlite3.connect(self.database, timeout=0.5, isolation_level=None)
        try:
            try:
                connection.execute(MODES[window.mode])
            except sqlite3.OperationalError:  # another writer has it now: try again shortly, still in the window
                self.busy += 1
                return
            began = self._clock()
            self.locks_taken += 1
            log.warning("sql fault: %s lock on %s", window.mode, self.database.name)
            while self._open_window() is window and not self._stop.wait(0.05):
                pass
            connection.execute("ROLLBACK")
            self.locked_s += self._clock() - began
            log.warning("sql fault: lock released after %.1fs", self._clock() - began)
        finally:
            connection.close()

    def run(self) -> None:
        while not self._stop.is_set():
            window = self._open_window()
            if window is not None:
                self._hold(window)
            self._stop.wait(0.05)

    def start(self) -> SqliteLocker:
        self._thread = threading.Thread(target=self.run, name="sql-faults", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def counters(self) -> dict:
        return {"service": SERVICE, "locks": self.locks_taken, "lockedSeconds": round(self.locked_s, 1),
                "busy": self.busy}


def main(argv: list[str] | None = None) -> int:
    import signal

    parser = argparse.ArgumentParser(prog="python -m local.sql_faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", default=os.environ.get(ENV_PROFILE), required=ENV_PROFILE not in os.environ,
                        help="profile name or file")
    parser.add_argument("--database", type=Path, required=True, help="the SQLite file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    try:
        name, document = load_profile(args.faults)
        windows = lock_windows(document, name)
    except ProfileError as exc:
        print(f"error: fault_profile_invalid: {exc}", file=sys.stderr)
        return 2
    locker = SqliteLocker(args.database, windows)
    signal.signal(signal.SIGTERM, lambda *_: locker._stop.set())
    log.info("sql faults (%s): %d lock window(s) on %s", name, len(windows), args.database)
    try:
        locker.run()
    except KeyboardInterrupt:
        pass
    log.info("sql faults stopped: %s", locker.counters())
    return 0


if __name__ == "__main__":
    sys.exit(main())


def stack_args(profile: str | None, connection_string: str) -> list[str] | None:
    """For local/stack.py: the locker's `python -m` arguments, or None when the profile has no "sql" locks."""
    if not profile:
        return None
    name, document = load_profile(profile)
    if not lock_windows(document, name):
        return None
    database = next((part.split("=", 1)[1] for part in connection_string.split(";")
                     if part.strip().lower().startswith("database=")), None)
    if database is None:
        raise ProfileError(f"{name}: services.sql needs an SQLite connection string with Database=")
    return ["-m", "local.sql_faults", "--faults", profile, "--database", database]
