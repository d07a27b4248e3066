"""Secrets of the local stack: random values made on first start and kept under .local/secrets.json.

Nothing secret is committed: the SAS keys of the local hubs, the signing key of the local managed-identity
endpoint and the function keys are generated per machine and read back by every process of the stack.

Two shapes. Function and host keys (`function-*`) travel in URLs (`?code=`), so they are URL-safe like Azure's
(letters, digits, `-`, `_`, no padding): a standard base64 key holds a `+` about half the time, which a query
string delivers as a space, and the host then answers 401. Every other secret stays standard base64, which its
readers decode (IoT Hub SAS keys, the identity signing key).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import secrets
import threading
from pathlib import Path

_lock = threading.Lock()  # threads of one process; the file lock below covers the stack's processes

URL_SAFE_PREFIX = "function-"  # function-key-default, function-master-key and any other host or function key
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def url_safe(name: str) -> bool:
    """Whether the secret called name is a function/host key (sent in URLs)."""
    return name.startswith(URL_SAFE_PREFIX)


def new_secret(name: str, nbytes: int = 32) -> str:
    if url_safe(name):
        return secrets.token_urlsafe(nbytes)
    return base64.b64encode(secrets.token_bytes(nbytes)).decode()


def _usable(name: str, value: str) -> bool:
    """False for a function key an earlier version made in standard base64: it is replaced (at the next stack
    start, which asks for every key before the host reads them)."""
    return not url_safe(name) or bool(_URL_SAFE.fullmatch(value))


def stack_secret(state_dir: Path, name: str, nbytes: int = 32) -> str:
    """Return the secret called name, creating and persisting it on first use."""
    path = Path(state_dir) / "secrets.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock, open(path.with_suffix(".lock"), "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        if name not in values or not _usable(name, values[name]):
            values[name] = new_secret(name, nbytes)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(values, indent=2, sort_keys=True))
            os.chmod(tmp, 0o600)
            tmp.replace(path)
        return values[name]
