"""Secrets of the local stack: random values made on first start and kept under .local/secrets.json.

Nothing secret is committed: the SAS keys of the local hubs, the signing key of the local managed-identity
endpoint and the function keys are generated per machine and read back by every process of the stack.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import threading
from pathlib import Path

_lock = threading.Lock()  # threads of one process; the file lock below covers the stack's processes


def stack_secret(state_dir: Path, name: str, nbytes: int = 32) -> str:
    """Return the base64 secret called name, creating and persisting it on first use."""
    path = Path(state_dir) / "secrets.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock, open(path.with_suffix(".lock"), "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        if name not in values:
            values[name] = base64.b64encode(secrets.token_bytes(nbytes)).decode()
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(values, indent=2, sort_keys=True))
            os.chmod(tmp, 0o600)
            tmp.replace(path)
        return values[name]
