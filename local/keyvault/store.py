"""Persistent, versioned vault objects (secrets, keys, certificates) with Key Vault's soft-delete rules.

Everything lives in one JSON document, state_dir/keyvault/vault.json, rewritten atomically (temp file, fsync,
rename) after each change so a crash never leaves half a vault and the stack's CA key survives restarts. Key
records hold their private key as PKCS#8 PEM: this file is the emulator's HSM (mode 0600, under the git-ignored
.local/). The HTTP layer renders records through explicit allow-lists, so private material has no route out.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import uuid
from pathlib import Path

from local.keyvault.errors import KIND, KeyVaultError, conflict, not_found

COLLECTIONS = ("secrets", "keys", "certificates")
RECOVERABLE_DAYS = 90
RECOVERY_LEVEL = "Recoverable+Purgeable"
SCHEMA = 1


def now() -> int:
    return int(time.time())


def new_version() -> str:
    """Key Vault versions are 32 lowercase hex characters."""
    return uuid.uuid4().hex


class VaultStore:
    """Thread-safe: Starlette runs the handlers in a thread pool."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "keyvault" / "vault.json"
        self._lock = threading.RLock()
        self._data = self._load()

    # --- persistence ---------------------------------------------------------------------------------------

    def _load(self) -> dict:
        empty = {"schema": SCHEMA, **{c: {} for c in COLLECTIONS}, "deleted": {c: {} for c in COLLECTIONS}}
        if not self.path.exists():
            return empty
        # A corrupt file is an error, not an empty vault: silently losing the CA key would be worse.
        data = json.loads(self.path.read_text())
        for c in COLLECTIONS:
            data.setdefault(c, {})
            data.setdefault("deleted", {}).setdefault(c, {})
        return data

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self._data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    # --- reads ---------------------------------------------------------------------------------------------

    def _locate(self, collection: str, name: str, version: str | None) -> tuple[dict, dict]:
        """(entry, record) of a version, or of the latest one when version is empty; caller holds the lock."""
        entry = self._data[collection].get(name)
        if entry is None:
            raise not_found(collection, name, version or None)
        record = entry["versions"].get(version or entry["order"][-1])
        if record is None:
            raise not_found(collection, name, version)
        return entry, record

    def get(self, collection: str, name: str, version: str | None = None) -> tuple[dict, dict]:
        """Return (entry, record) for a version, or the latest one when version is empty."""
        with self._lock:
            entry, record = self._locate(collection, name, version)
            return copy.deepcopy(entry), copy.deepcopy(record)

    def exists(self, collection: str, name: str) -> bool:
        with self._lock:
            return name in self._data[collection]

    def is_managed(self, collection: str, name: str) -> bool:
        with self._lock:
            entry = self._data[collection].get(name)
            return bool(entry and entry.get("managed"))

    def names(self, collection: str) -> list[tuple[str, dict, dict]]:
        """(name, entry, latest record) for every live object, by name."""
        with self._lock:
            return [
                (n, copy.deepcopy(e), copy.deepcopy(e["versions"][e["order"][-1]]))
                for n, e in sorted(self._data[collection].items())
            ]

    def versions(self, collection: str, name: str) -> list[dict]:
        with self._lock:
            entry = self._data[collection].get(name)
            if entry is None:
                raise not_found(collection, name)
            return [copy.deepcopy(entry["versions"][v]) for v in entry["order"]]

    # --- writes --------------------------------------------------------------------------------------------

    def add_versions(self, records: dict[str, tuple[str, dict]], managed: bool = False) -> None:
        """Add one new version per collection ({collection: (name, record)}) all-or-nothing.

        A certificate import writes the certificate, its key and its secret together: a failure must leave
        none of them behind.
        """
        with self._lock:
            deleted_certificate = self._data["deleted"]["certificates"]
            for collection, (name, _) in records.items():
                if name in self._data["deleted"][collection] or (
                    name in deleted_certificate and collection in deleted_certificate[name].get("linked", {})
                ):
                    kind = KIND[collection]
                    raise conflict(
                        f"{kind.capitalize()} {name} is currently in a deleted but recoverable state, and its name "
                        f"cannot be reused; in this state, the {kind} can only be recovered or purged.",
                        "ObjectIsDeletedButRecoverable",
                    )
            for collection, (name, record) in records.items():
                entry = self._data[collection].setdefault(name, {"versions": {}, "order": []})
                entry["managed"] = managed
                entry["versions"][record["version"]] = copy.deepcopy(record)
                entry["order"].append(record["version"])
            self._save()

    def update(self, collection: str, name: str, version: str | None, changes: dict) -> dict:
        """Merge changes (attributes / tags / contentType / key_ops) into one version and return it."""
        with self._lock:
            _, record = self._locate(collection, name, version)
            for field, value in changes.items():
                if field == "attributes":
                    record["attributes"].update(value)
                else:
                    record[field] = value
            record["attributes"]["updated"] = now()
            self._save()
            return copy.deepcopy(record)

    # --- soft delete ---------------------------------------------------------------------------------------

    def delete(self, collection: str, name: str, cascade: tuple[str, ...] = ()) -> dict:
        """Move an object (and, for a certificate, its key and secret) to the deleted collection."""
        with self._lock:
            entry = self._data[collection].pop(name, None)
            if entry is None:
                raise not_found(collection, name)
            deleted_at = now()
            entry["deletedDate"] = deleted_at
            entry["scheduledPurgeDate"] = deleted_at + RECOVERABLE_DAYS * 86400
            entry["linked"] = {c: self._data[c].pop(name) for c in cascade if name in self._data[c]}
            self._data["deleted"][collection][name] = entry
            self._save()
            return copy.deepcopy(entry)

    def get_deleted(self, collection: str, name: str) -> dict:
        with self._lock:
            entry = self._data["deleted"][collection].get(name)
            if entry is None:
                raise not_found(collection, name)
            return copy.deepcopy(entry)

    def deleted_entries(self, collection: str) -> list[tuple[str, dict]]:
        with self._lock:
            return [(n, copy.deepcopy(e)) for n, e in sorted(self._data["deleted"][collection].items())]

    def purge(self, collection: str, name: str) -> None:
        with self._lock:
            if self._data["deleted"][collection].pop(name, None) is None:
                raise not_found(collection, name)
            self._save()

    def recover(self, collection: str, name: str) -> dict:
        with self._lock:
            entry = self._data["deleted"][collection].get(name)
            if entry is None:
                raise not_found(collection, name)
            linked = entry.get("linked", {})
            for c in (collection, *linked):
                if name in self._data[c]:
                    raise conflict(f"A {KIND[c]} named {name} already exists; it cannot be recovered over.")
            del self._data["deleted"][collection][name]
            for field in ("deletedDate", "scheduledPurgeDate", "linked"):
                entry.pop(field, None)
            self._data[collection][name] = entry
            for c, linked_entry in linked.items():
                self._data[c][name] = linked_entry
            self._save()
            return copy.deepcopy(entry)


def base_attributes(extra: dict | None = None) -> dict:
    t = now()
    attrs = {"enabled": True, "created": t, "updated": t}
    attrs.update({k: v for k, v in (extra or {}).items() if v is not None})
    return attrs


__all__ = ["COLLECTIONS", "RECOVERABLE_DAYS", "RECOVERY_LEVEL", "KeyVaultError", "VaultStore", "new_version"]
