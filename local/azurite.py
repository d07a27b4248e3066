"""Azurite, Microsoft's Storage emulator (npm, pinned in package.json): start it and name its endpoints."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Azurite's well-known development account (public, documented by Microsoft; not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzuritePorts:
    blob: int = 10000
    queue: int = 10001
    table: int = 10002


def connection_string(ports: AzuritePorts | None = None) -> str:
    """Explicit form of UseDevelopmentStorage=true, valid for any ports."""
    ports = ports or AzuritePorts()
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{ports.blob}/{DEV_ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{ports.queue}/{DEV_ACCOUNT};"
        f"TableEndpoint=http://127.0.0.1:{ports.table}/{DEV_ACCOUNT};"
    )


def azurite_executable() -> str:
    local_bin = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if local_bin.exists():
        return str(local_bin)
    found = shutil.which("azurite")
    if not found:
        raise FileNotFoundError("Azurite is not installed: run `npm ci` in the repository (make does it)")
    return found


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def start_azurite(location: Path, ports: AzuritePorts, log_file: Path | None = None,
                  timeout: float = 30) -> subprocess.Popen:
    """Start Azurite bound to 127.0.0.1 with its data under location; return once all ports answer."""
    location.mkdir(parents=True, exist_ok=True)
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    proc = subprocess.Popen(
        [
            azurite_executable(), "--silent", "--disableTelemetry", "--skipApiVersionCheck",
            "--location", str(location),
            "--blobHost", "127.0.0.1", "--blobPort", str(ports.blob),
            "--queueHost", "127.0.0.1", "--queuePort", str(ports.queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(ports.table),
        ],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not all(port_open(p) for p in (ports.blob, ports.queue, ports.table)):
        if proc.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {proc.returncode} (log: {log_file})")
        if time.monotonic() > deadline:
            proc.terminate()
            raise TimeoutError("Azurite did not open its ports in time")
        time.sleep(0.1)
    return proc
