"""The hub's durable state: one JSON file per device, per configuration and per undelivered event.

Files are written whole to a temporary name and renamed over the old one, so a crash leaves either the old
or the new version, never half a file. One file per record keeps a write proportional to the record, not to
the registry (10,000 devices would make a single-document store rewrite megabytes per twin update).
Everything is also held in memory; a lock makes each read-modify-write atomic across threads.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _file_name(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=") + ".json"


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(value, separators=(",", ":")))
    os.replace(tmp, path)


class Collection:
    """Records keyed by id, each persisted as its own file in one directory."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._items: dict[str, dict[str, Any]] = {}
        for path in directory.iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write interrupted before its rename
            elif path.suffix == ".json":
                record = json.loads(path.read_text())
                self._items[record["_key"]] = record["value"]

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._items.get(key)
        return copy.deepcopy(value) if value is not None else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        write_json_atomic(self.directory / _file_name(key), {"_key": key, "value": value})
        self._items[key] = copy.deepcopy(value)

    def delete(self, key: str) -> bool:
        if key not in self._items:
            return False
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _file_name(key)).unlink()
        del self._items[key]
        return True

    def keys(self) -> list[str]:
        return sorted(self._items)

    def values(self) -> Iterator[dict[str, Any]]:
        """Live records in key order, not copies: callers must not modify them."""
        for key in sorted(self._items):
            yield self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items


class HubStore:
    """Devices (identity + twin + modules), configurations, and the outbox of Event Grid events."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.lock = threading.RLock()
        self.devices = Collection(self.root / "devices")
        self.configurations = Collection(self.root / "configurations")
        self.outbox = Collection(self.root / "outbox")
        self.dead_letters = self.root / "dead-letters"
