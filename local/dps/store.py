"""The DPS emulator's individual enrollments and enrollment groups, persisted under {state dir}/dps/enrollments.json.

One JSON document, rewritten atomically (temp file, fsync, rename) after each change, so a crash never leaves half
a store and readers in other processes (the DPS simulator, `python -m local.dps enrollments`) always see a whole
one. The emulator is the only writer; readers call refresh() (a stat, and a re-read only when the file changed).

Each entry holds the enrollment as the service API renders it (`record`: registrationId, attestation with the
certificates' `info`, provisioningStatus, etag, timestamps, the optional fields the client set) and, apart, the
PEM certificates of its X.509 attestation (`certificates`: primary, secondary), which DPS keeps to attest devices
but does not send back (the simulator needs them to match a device's certificate). Registration IDs are
case-insensitive in DPS (service API, IndividualEnrollment.registrationId): entries are keyed by the lower-case ID.

Enrollment groups live beside them in the same document (collection GROUPS, keyed by the lower-case
enrollmentGroupId; case-insensitive here too, team reading), their `certificates` being the signing (CA)
certificates of the group's X.509 attestation, primary and secondary (a file written before groups existed
simply has none).
"""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

SCHEMA = 1
ENROLLMENTS = "enrollments"  # individual enrollments
GROUPS = "enrollmentGroups"
COLLECTIONS = (ENROLLMENTS, GROUPS)


class StoreConflict(Exception):
    """If-Match did not match the entry (412), or named an entry that does not exist."""


class StoreMissing(Exception):
    """No entry for that registration ID (404)."""


def store_path(state_dir: Path) -> Path:
    return Path(state_dir) / "dps" / "enrollments.json"


class EnrollmentStore:
    """Thread-safe: the emulator's handlers run in a thread pool."""

    def __init__(self, state_dir: Path) -> None:
        self.path = store_path(state_dir)
        self._lock = threading.RLock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, dict[str, dict]] = {c: {} for c in COLLECTIONS}
        self.refresh()

    # --- persistence -----------------------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int, int] | None:
        """Each save renames a new file into place: a new inode, whatever the clock's granularity."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def refresh(self) -> None:
        """Re-read the file when another process changed it (cheap when it did not: one stat)."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            if stamp is None:
                self._entries, self._stamp = {c: {} for c in COLLECTIONS}, None
                return
            # A corrupt file is an error, not an empty store: silently forgetting a disallowed device lets it in.
            data = json.loads(self.path.read_text())
            self._entries = {c: dict(data.get(c, {})) for c in COLLECTIONS}
            self._stamp = stamp

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"schema": SCHEMA, **self._entries}, fh, sort_keys=True, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._stamp = self._file_stamp()

    # --- reads -----------------------------------------------------------------------------------------------

    def get(self, registration_id: str, collection: str = ENROLLMENTS) -> dict | None:
        """A copy of the entry ({"record": ..., "certificates": ...}), or None."""
        with self._lock:
            self.refresh()
            entry = self._entries[collection].get(registration_id.lower())
            return copy.deepcopy(entry) if entry is not None else None

    def entries(self, collection: str = ENROLLMENTS) -> list[dict]:
        """Copies of every entry, ordered by registration ID (or enrollment group ID)."""
        with self._lock:
            self.refresh()
            found = self._entries[collection]
            return [copy.deepcopy(found[k]) for k in sorted(found)]

    # --- writes (the emulator) -------------------------------------------------------------------------------

    def put(self, registration_id: str, build, if_match: str | None, collection: str = ENROLLMENTS) -> dict:
        """Create or replace the entry built by build(current entry or None) under the lock; If-Match (when
        given) must match the current etag (`*`: any existing entry), as RFC 7232 section 3.1 has it."""
        key = registration_id.lower()
        with self._lock:
            self.refresh()
            current = self._entries[collection].get(key)
            _check_if_match(current, if_match)
            entry = build(copy.deepcopy(current) if current is not None else None)
            self._entries[collection][key] = entry
            self._save()
            return copy.deepcopy(entry)

    def delete(self, registration_id: str, if_match: str | None, collection: str = ENROLLMENTS) -> None:
        key = registration_id.lower()
        with self._lock:
            self.refresh()
            current = self._entries[collection].get(key)
            if current is None:
                raise StoreMissing(registration_id)
            _check_if_match(current, if_match)
            del self._entries[collection][key]
            self._save()


def _check_if_match(current: dict | None, if_match: str | None) -> None:
    if if_match is None:
        return
    if current is None:
        raise StoreConflict("If-Match names an enrollment that does not exist")
    if if_match.strip() == "*":
        return
    if if_match.strip() != current["record"]["etag"]:
        raise StoreConflict("the etag does not match the enrollment's")
